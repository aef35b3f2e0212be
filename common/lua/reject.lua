#!lua
-- reject: record a spec that could not be accepted as a completed failure.
--
-- KEYS[1] gm:{wg:G}:job:<id>      HASH   the record (must not exist yet)
-- KEYS[2] gm:{wg:G}:completed     ZSET   completed ids
-- KEYS[3] gm:{wg:G}:done:<id>     LIST   wakes waiters
-- KEYS[4] gm:{wg:G}:events        STREAM lifecycle events
-- KEYS[5] gm:{wg:G}:ixtrim        ZSET   completed jobs' index entries, for the retention trim
-- KEYS[6..] gm:{wg:G}:ix:<entry>  ZSET   listing indexes the job joins (status:failure, kind, ...)
-- ARGV[1] job id
-- ARGV[2] now (epoch ms)
-- ARGV[3] retention in seconds
-- ARGV[4] TTL of the done list in seconds
-- ARGV[5] events stream cap
-- ARGV[6] the job's index member
-- ARGV[7] its ixtrim member (the record's ix field and its status entry)
-- ARGV[8..] record field, value, ... (status failure, error, raw_spec, ...)
--
-- Returns 1 when written, 0 when a job with this id exists (the caller then
-- records the rejection under a new id: nothing is lost, nothing clobbered).

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
for i = 6, #KEYS do
  redis.call('ZADD', KEYS[i], 0, ARGV[6])
end
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('LPUSH', KEYS[3], 'failure')
redis.call('EXPIRE', KEYS[3], ARGV[4])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'event', 'rejected', 'id', ARGV[1])
return 1
