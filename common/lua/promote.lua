#!lua
-- promote: move every due job of one group from scheduled to ready.
--
-- KEYS[1] gm:{wg:G}:scheduled     ZSET   future jobs, score = scheduled_for
-- KEYS[2] gm:{wg:G}:ready         LIST   due jobs
-- ARGV[1] now (epoch ms)
-- ARGV[2] batch size
--
-- Returns {moved, next_due, max_lag}: how many ids moved (in score order, at
-- most one batch), the score of the new head of scheduled (-1 when empty),
-- and how late the oldest moved job was in ms (0 when none moved).

local due = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, ARGV[2],
                       'WITHSCORES')
local ids = {}
for i = 1, #due, 2 do
  ids[#ids + 1] = due[i]
end
local lag = 0
if #ids > 0 then
  redis.call('RPUSH', KEYS[2], unpack(ids))
  redis.call('ZREM', KEYS[1], unpack(ids))
  lag = tonumber(ARGV[1]) - tonumber(due[2])
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_due = -1
if head[2] ~= nil then
  next_due = tonumber(head[2])
end
return {#ids, next_due, lag}
