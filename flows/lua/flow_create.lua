#!lua
-- flow_create: store a new flow's definition and initial state, and queue its start event.
--
-- KEYS[1] gm:{wg:G}:flow:<id>        HASH  def, state, version
-- KEYS[2] gm:{wg:G}:flowevents:<id>  LIST  pending events
-- KEYS[3] gm:{wg:G}:flowq            LIST  flows with pending events
-- KEYS[4] gm:{wg:G}:flowsrunning     ZSET  running flows by last commit
-- ARGV[1] flow id
-- ARGV[2] definition (canonical JSON)
-- ARGV[3] initial state (JSON)
-- ARGV[4] start event (JSON)
-- ARGV[5] now (epoch ms)
--
-- Returns 1 when created, 0 when the flow already existed (a retried call): nothing changes.

if #KEYS ~= 4 or #ARGV ~= 5 then
  return redis.error_reply('ERR flow_create.lua: wrong number of keys or arguments')
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'def', ARGV[2], 'state', ARGV[3], 'version', 0)
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
return 1
