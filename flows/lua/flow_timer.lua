#!lua
-- flow_timer: turn one due timer into an event of its flow, once.
--
-- KEYS[1] gm:{wg:G}:flowtimers        ZSET  "<flow id> <key>" -> due ms
-- KEYS[2] gm:{wg:G}:flowevents:<id>   LIST  the flow's pending events
-- KEYS[3] gm:{wg:G}:flowq             LIST  flows with pending events
-- ARGV[1] the timer member ("<flow id> <key>")
-- ARGV[2] flow id
-- ARGV[3] the event (JSON)
--
-- Returns 1 when fired now, 0 when another sweeper fired (or a dispatch removed) it first.

if #KEYS ~= 3 or #ARGV ~= 3 then
  return redis.error_reply('ERR flow_timer.lua: wrong number of keys or arguments')
end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('RPUSH', KEYS[3], ARGV[2])
return 1
