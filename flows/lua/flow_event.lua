#!lua
-- flow_event: hand one event (a step completed, a resume, a cancel) to a flow.
--
-- KEYS[1] gm:{wg:G}:flow:<id>        HASH  the flow (must exist)
-- KEYS[2] gm:{wg:G}:flowevents:<id>  LIST  pending events
-- KEYS[3] gm:{wg:G}:flowq            LIST  flows with pending events
-- ARGV[1] flow id
-- ARGV[2] event (JSON)
--
-- Returns 1 when queued, 0 when there is no such flow (nothing is written).
-- Delivering an event twice is harmless: the transition ignores what it no longer waits for.

if #KEYS ~= 3 or #ARGV ~= 2 then
  return redis.error_reply('ERR flow_event.lua: wrong number of keys or arguments')
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('RPUSH', KEYS[3], ARGV[1])
return 1
