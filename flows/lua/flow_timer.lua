#!lua
-- flow_timer: turn one due timer into an event of its flow, once.
--
-- KEYS[1] gm:{wg:G}:flowtimers        ZSET  "<flow id> <key>" -> due ms
-- KEYS[2] gm:{wg:G}:flowevents:<id>   LIST  the flow's pending events
-- KEYS[3] gm:{wg:G}:flowq             LIST  flows with pending events
-- KEYS[4] gm:{wg:G}:flow:<id>         HASH  the flow: a timer of a flow whose keys expired
--                                           is dropped, not turned into a list without TTL
-- ARGV[1] the timer member ("<flow id> <key>")
-- ARGV[2] flow id
-- ARGV[3] the event (JSON)
--
-- Returns 1 when fired now, 0 when another sweeper fired (or a dispatch removed) it first,
-- or its flow is gone.

if #KEYS ~= 4 or #ARGV ~= 3 then
  return redis.error_reply('ERR flow_timer.lua: wrong number of keys or arguments')
end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 or redis.call('EXISTS', KEYS[4]) == 0 then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('RPUSH', KEYS[3], ARGV[2])
return 1
