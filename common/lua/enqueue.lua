#!lua
-- enqueue: create a job record and queue it.
--
-- KEYS[1] gm:{wg:G}:job:<id>      HASH   the record (must not exist yet)
-- KEYS[2] gm:{wg:G}:scheduled     ZSET   future jobs, score = scheduled_for
-- KEYS[3] gm:{wg:G}:ready         LIST   due jobs
-- KEYS[4] gm:{wg:G}:wake          LIST   nudge for the group's promoter
-- KEYS[5] gm:{wg:G}:events        STREAM lifecycle events
-- KEYS[6..] gm:{wg:G}:ix:<entry>  ZSET   listing indexes the job joins (status:queued, kind, ...)
-- ARGV[1] job id
-- ARGV[2] scheduled_for (epoch ms)
-- ARGV[3] now (epoch ms)
-- ARGV[4] priority (> 0: a due job goes to the head of ready)
-- ARGV[5] events stream cap
-- ARGV[6] the job's index member (<created_at 13 digits>:<id>)
-- ARGV[7..] record field, value, field, value, ...
--
-- Returns 0 when a job with this id exists (nothing is written: a repeated
-- id is never run twice), 1 when queued for later, 2 when ready now.
-- A future job earlier than the current head nudges the promoter, which then
-- re-plans its sleep.

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
for i = 6, #KEYS do
  redis.call('ZADD', KEYS[i], 0, ARGV[6])
end

local at = tonumber(ARGV[2])
local state
if at <= tonumber(ARGV[3]) then
  if tonumber(ARGV[4]) > 0 then
    redis.call('LPUSH', KEYS[3], ARGV[1])
  else
    redis.call('RPUSH', KEYS[3], ARGV[1])
  end
  state = 2
else
  local head = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  redis.call('ZADD', KEYS[2], at, ARGV[1])
  if head[2] == nil or at < tonumber(head[2]) then
    -- One pending nudge is enough: keep the list at a single element.
    redis.call('DEL', KEYS[4])
    redis.call('LPUSH', KEYS[4], ARGV[2])
  end
  state = 1
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*', 'event', 'queued', 'id', ARGV[1])
return state
