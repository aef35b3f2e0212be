#!lua
-- flow_open: create a flow job's record, already running (no worker runs a flow), with
-- its flow: definition, initial state and start event. One script, so a flow job never
-- exists without its flow, nor a flow without its record.
--
-- KEYS[1] gm:{wg:G}:job:<id>          HASH   the flow job's record (must not exist yet)
-- KEYS[2] gm:{wg:G}:events            STREAM lifecycle events
-- KEYS[3] gm:{wg:G}:flow:<id>         HASH   def, state, version
-- KEYS[4] gm:{wg:G}:flowevents:<id>   LIST   pending events
-- KEYS[5] gm:{wg:G}:flowq             LIST   flows with pending events
-- KEYS[6] gm:{wg:G}:flowsrunning      ZSET   running flows by last commit
-- KEYS[7] gm:{wg:G}:flowtimers        ZSET   "<flow id> <key>" -> due ms (the flow's timeout)
-- KEYS[8..] gm:{wg:G}:ix:<entry>      ZSET   listing indexes the job joins (status:running, ...)
-- ARGV[1] job id (= flow id)
-- ARGV[2] now (epoch ms)
-- ARGV[3] events stream cap
-- ARGV[4] the job's index member (<created_at 13 digits>:<id>)
-- ARGV[5] definition (canonical JSON)
-- ARGV[6] initial state (JSON)
-- ARGV[7] start event (JSON)
-- ARGV[8] when the flow times out (epoch ms; 0: it has no timeout_s)
-- ARGV[9..] record field, value, field, value, ...
--
-- Returns 1 when created, 0 when a job or a flow with this id exists (nothing is written).

if #KEYS < 7 or #ARGV < 10 or #ARGV % 2 ~= 0 then
  return redis.error_reply('ERR flow_open.lua: wrong number of keys or arguments')
end
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
for i = 8, #KEYS do
  redis.call('ZADD', KEYS[i], 0, ARGV[4])
end
redis.call('HSET', KEYS[3], 'def', ARGV[5], 'state', ARGV[6], 'version', 0)
redis.call('RPUSH', KEYS[4], ARGV[7])
redis.call('RPUSH', KEYS[5], ARGV[1])
redis.call('ZADD', KEYS[6], ARGV[2], ARGV[1])
if ARGV[8] ~= '0' then
  redis.call('ZADD', KEYS[7], ARGV[8], ARGV[1] .. ' flow_timeout')
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'event', 'queued', 'id', ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'event', 'started', 'id', ARGV[1],
           'worker', 'flows')
return 1
