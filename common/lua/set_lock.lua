#!lua
-- set_lock: record the outcome of a script version's dependencies job (or the start of one).
--
-- KEYS[1] gm:{scripts}:script:<hash>    HASH  the version
-- KEYS[2] gm:{scripts}:locked           HASH  path -> latest runnable (locked) hash
-- KEYS[3] gm:{scripts}:history:<path>   LIST  hashes of the path, oldest first
-- ARGV[1] dependencies job id  ARGV[2] `locking` | `locked` | `failed`  ARGV[3] lock text
-- ARGV[4] requirements (the resolver's input)
--
-- `locking` starts a (re)lock: the job becomes the version's lock_job; a lock
-- the version already had stays usable meanwhile. `locked` and `failed` apply
-- only when ARGV[1] is still the version's lock_job (a later relock wins);
-- `locked` makes the version its path's runnable one when it is at least as
-- new as the current one (by its last place in the history); `failed` drops
-- the lock, and if the version was the runnable one, its path has none until
-- ScriptStore.runnable finds the newest other locked version in the history.
-- Returns 1 when applied, 0 when superseded or the version does not exist.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local path = redis.call('HGET', KEYS[1], 'path')
local hash = redis.call('HGET', KEYS[1], 'hash')
if ARGV[2] == 'locking' then
  redis.call('HSET', KEYS[1], 'lock_job', ARGV[1], 'lock_status', 'locking',
             'requirements', ARGV[4])
  return 1
end
if redis.call('HGET', KEYS[1], 'lock_job') ~= ARGV[1] then
  return 0
end
if ARGV[2] == 'locked' then
  redis.call('HSET', KEYS[1], 'lock_status', 'locked', 'lock', ARGV[3], 'requirements', ARGV[4])
  local current = redis.call('HGET', KEYS[2], path)
  local mine = redis.call('LPOS', KEYS[3], hash, 'RANK', -1)
  local theirs = current and redis.call('LPOS', KEYS[3], current, 'RANK', -1)
  if (not current) or (not theirs) or (mine and mine >= theirs) then
    redis.call('HSET', KEYS[2], path, hash)
  end
  return 1
end
redis.call('HSET', KEYS[1], 'lock_status', 'failed')
redis.call('HDEL', KEYS[1], 'lock')
if redis.call('HGET', KEYS[2], path) == hash then
  redis.call('HDEL', KEYS[2], path)
end
return 1
