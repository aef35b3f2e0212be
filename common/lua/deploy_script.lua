#!lua
-- deploy_script: save an immutable script version and point its path at it.
--
-- KEYS[1] gm:{scripts}:script:<hash>    HASH  the version
-- KEYS[2] gm:{scripts}:paths            HASH  path -> latest hash
-- KEYS[3] gm:{scripts}:history:<path>   LIST  hashes of the path, oldest first
-- KEYS[4] gm:{scripts}:locked           HASH  path -> latest runnable (locked) hash
-- ARGV[1] hash  ARGV[2] path  ARGV[3] language  ARGV[4] code  ARGV[5] now  ARGV[6] created_by
-- ARGV[7..] more fields of a new version: field, value, ... (the jobs' defaults timeout_s,
--           retry, tag, limits; the lock fields lock_status, lock, lock_job, requirements)
--
-- Returns 1 when the version is new, 0 when the same content was deployed
-- before (it becomes the latest again if it was not). A different content
-- under an existing hash is an error: versions never change. A version that
-- is runnable (its lock_status is `locked`, or absent: no lock needed) becomes
-- the path's runnable version too.

local existing = redis.call('HMGET', KEYS[1], 'path', 'language', 'code')
local created = 0
if existing[1] then
  if existing[1] ~= ARGV[2] or existing[2] ~= ARGV[3] or existing[3] ~= ARGV[4] then
    return redis.error_reply('HASHCOLLISION script hash ' .. ARGV[1] .. ' names another version')
  end
else
  redis.call('HSET', KEYS[1], 'hash', ARGV[1], 'path', ARGV[2], 'language', ARGV[3],
             'code', ARGV[4], 'created_at', ARGV[5], 'created_by', ARGV[6])
  if #ARGV >= 7 then
    redis.call('HSET', KEYS[1], unpack(ARGV, 7))
  end
  created = 1
end
if redis.call('HGET', KEYS[2], ARGV[2]) ~= ARGV[1] then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
  redis.call('RPUSH', KEYS[3], ARGV[1])
end
local status = redis.call('HGET', KEYS[1], 'lock_status')
if not status or status == 'locked' then
  redis.call('HSET', KEYS[4], ARGV[2], ARGV[1])
end
return created
