#!lua
-- flow_commit: apply one transition computed from (state at version V, the event at the head).
--
-- KEYS[1] gm:{wg:G}:flow:<id>        HASH  def, state, version
-- KEYS[2] gm:{wg:G}:flowevents:<id>  LIST  pending events; the head is the event applied
-- KEYS[3] gm:{wg:G}:flowoutbox:<id>  LIST  actions to carry out
-- KEYS[4] gm:{wg:G}:flowsrunning     ZSET  running flows by last commit (the sweep's index)
-- KEYS[5] gm:{wg:G}:flowtimers       ZSET  due timers; a flow that ends drops its timeout's
-- ARGV[1] the version the transition read
-- ARGV[2] the event it applied (exactly the head's text)
-- ARGV[3] the new state (JSON)
-- ARGV[4] flow id
-- ARGV[5] now (epoch ms)
-- ARGV[6] 0 while the flow runs; once its new state is terminal, the retention in seconds:
--         the flow leaves the running index and its keys expire with its record
-- ARGV[7] n, the number of frames archived by this transition
-- ARGV[8 .. 7+2n] field, frame (JSON) pairs written to the flow's hash (f:<address>)
-- ARGV[8+2n ..] the actions (JSON each), appended to the outbox in order
--
-- Returns {events remaining, the first 100 actions of the outbox} when committed: the state,
-- the removal of the event and the actions are one step, so an event is applied exactly
-- once (and the caller carries the actions out without reading the outbox again).
-- Returns {-1}, writing nothing, when another advancer committed first (version or head
-- moved): read again and recompute.

if #KEYS ~= 5 or #ARGV < 7 or #ARGV < 7 + 2 * tonumber(ARGV[7]) then
  return redis.error_reply('ERR flow_commit.lua: wrong number of keys or arguments')
end
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then
  return {-1}
end
if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[2] then
  return {-1}
end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'version', tonumber(ARGV[1]) + 1)
redis.call('LPOP', KEYS[2])
local first_action = 8 + 2 * tonumber(ARGV[7])
if first_action > 8 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 8, first_action - 1))
end
if #ARGV >= first_action then
  redis.call('RPUSH', KEYS[3], unpack(ARGV, first_action))
end
if ARGV[6] ~= '0' then
  redis.call('ZREM', KEYS[4], ARGV[4])
  redis.call('ZREM', KEYS[5], ARGV[4] .. ' flow_timeout')
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
  redis.call('EXPIRE', KEYS[3], ARGV[6])
else
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4])
end
local reply = {redis.call('LLEN', KEYS[2])}
for _, action in ipairs(redis.call('LRANGE', KEYS[3], 0, 99)) do
  reply[#reply + 1] = action
end
return reply
