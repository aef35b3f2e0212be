#!lua
-- deploy_flow: save an immutable flow version and point its path at it.
--
-- KEYS[1] gm:{flows}:flow:<hash>      HASH  the version: hash, path, value, created_at, created_by
-- KEYS[2] gm:{flows}:paths            HASH  path -> latest hash
-- KEYS[3] gm:{flows}:history:<path>   LIST  hashes of the path, oldest first
-- ARGV[1] hash  ARGV[2] path  ARGV[3] the flow (canonical JSON)  ARGV[4] now  ARGV[5] created_by
--
-- Returns 1 when the version is new, 0 when the same flow was deployed at this path before
-- (it becomes the latest again if it was not). Another flow under an existing hash is an
-- error: versions never change.

if #KEYS ~= 3 or #ARGV ~= 5 then
  return redis.error_reply('ERR deploy_flow.lua: wrong number of keys or arguments')
end
local existing = redis.call('HMGET', KEYS[1], 'path', 'value')
local created = 0
if existing[1] then
  if existing[1] ~= ARGV[2] or existing[2] ~= ARGV[3] then
    return redis.error_reply('HASHCOLLISION flow hash ' .. ARGV[1] .. ' names another version')
  end
else
  redis.call('HSET', KEYS[1], 'hash', ARGV[1], 'path', ARGV[2], 'value', ARGV[3],
             'created_at', ARGV[4], 'created_by', ARGV[5])
  created = 1
end
if redis.call('HGET', KEYS[2], ARGV[2]) ~= ARGV[1] then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
  redis.call('RPUSH', KEYS[3], ARGV[1])
end
return created
