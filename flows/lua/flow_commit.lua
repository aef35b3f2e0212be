#!lua
-- flow_commit: apply one transition computed from (state at version V, the first n events).
--
-- KEYS[1] gm:{wg:G}:flow:<id>        HASH  def, state, version
-- KEYS[2] gm:{wg:G}:flowevents:<id>  LIST  pending events; the first n are the events applied
-- KEYS[3] gm:{wg:G}:flowoutbox:<id>  LIST  actions to carry out
-- KEYS[4] gm:{wg:G}:flowsrunning     ZSET  running flows by last commit (the sweep's index)
-- KEYS[5] gm:{wg:G}:flowtimers       ZSET  due timers; a flow that ends drops its timeout's
-- ARGV[1] the version the transition read
-- ARGV[2] the first event it applied (exactly the head's text)
-- ARGV[3] the new state (JSON)
-- ARGV[4] flow id
-- ARGV[5] now (epoch ms)
-- ARGV[6] 0 while the flow runs; once its new state is terminal, the retention in seconds:
--         the flow leaves the running index and its keys expire with its record
-- ARGV[7] e, the number of events applied (1 or more: a burst of step completions is
--         applied in one transition, so a large state is read and written once for all)
-- ARGV[8] the last event applied (exactly the text at index e - 1; ARGV[2] when e is 1)
-- ARGV[9] n, the number of frames archived by this transition
-- ARGV[10 .. 9+2n] field, frame (JSON) pairs written to the flow's hash (f:<address>)
-- ARGV[10+2n ..] the actions (JSON each), appended to the outbox in order
--
-- Returns {events remaining, the first 100 actions of the outbox} when committed: the state,
-- the removal of the events and the actions are one step, so an event is applied exactly
-- once (and the caller carries the actions out without reading the outbox again). Only a
-- commit removes events (producers append), so with the version unchanged the first e
-- events are the ones read; their first and last are checked all the same.
-- Returns {-1}, writing nothing, when another advancer committed first (version or head
-- moved): read again and recompute.

if #KEYS ~= 5 or #ARGV < 9 or #ARGV < 9 + 2 * tonumber(ARGV[9]) or tonumber(ARGV[7]) < 1 then
  return redis.error_reply('ERR flow_commit.lua: wrong number of keys or arguments')
end
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then
  return {-1}
end
local applied = tonumber(ARGV[7])
if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[2] or redis.call('LINDEX', KEYS[2], applied - 1) ~= ARGV[8] then
  return {-1}
end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'version', tonumber(ARGV[1]) + 1)
redis.call('LTRIM', KEYS[2], applied, -1)
local first_action = 10 + 2 * tonumber(ARGV[9])
if first_action > 10 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 10, first_action - 1))
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
