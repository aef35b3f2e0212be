#!lua
-- claim_start: take up to K due ids off ready into a worker's running list and start each,
-- in one call (the worker blocks in BLMOVE only when ready is empty).
--
-- KEYS[1] gm:{wg:G}:ready               LIST   due job ids, oldest first
-- KEYS[2] gm:{wg:G}:running:<worker>    LIST   ids the worker holds
-- KEYS[3] gm:{wg:G}:events              STREAM lifecycle events
-- KEYS[4] gm:{wg:G}:ix:status:queued    ZSET   listing index the jobs leave
-- KEYS[5] gm:{wg:G}:ix:status:running   ZSET   listing index the jobs join
-- ARGV[1] prefix of the group's job records, "gm:{wg:G}:job:" (see below)
-- ARGV[2] worker id
-- ARGV[3] now (epoch ms)
-- ARGV[4] claim prefix: fresh and random (hex); job n of this call gets claim <prefix><n as 4 hex digits>
-- ARGV[5] events stream cap
-- ARGV[6] K: how many jobs to start from ready at most (ids of canceled jobs taken do not
--         count; at most 4K + 16 ids are taken off ready in one call)
-- ARGV[7] optional: an id the worker already moved into its running list (a BLMOVE), started
--         first
--
-- The records' keys cannot be passed in KEYS: the ids are only known once taken off ready.
-- They are built from ARGV[1], which carries the same hash tag {wg:G} as every key above,
-- so the script touches one slot only and runs unchanged on a Redis Cluster.
--
-- Returns a flat array: id, claim, HGETALL record (an array) for each job now running under
-- this worker. An id whose job is gone or no longer queued (canceled while it waited) is
-- dropped from the running list and not returned.

local function move_status(job_key, from_key, to_key)
  local ix = redis.call('HGET', job_key, 'ix')
  if ix then
    local m = string.match(ix, '^[^\t]*')
    redis.call('ZREM', from_key, m)
    redis.call('ZADD', to_key, 0, m)
  end
end

local out = {}
local n = 0

local function start(id)
  local job_key = ARGV[1] .. id
  if redis.call('HGET', job_key, 'status') ~= 'queued' then
    redis.call('LREM', KEYS[2], 0, id)
    return
  end
  n = n + 1
  local claim = ARGV[4] .. string.format('%04x', n)
  redis.call('HSET', job_key, 'status', 'running', 'started_at', ARGV[3], 'worker', ARGV[2],
             'claim', claim)
  redis.call('HINCRBY', job_key, 'attempt', 1)
  move_status(job_key, KEYS[4], KEYS[5])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'event', 'started', 'id', id,
             'worker', ARGV[2])
  out[#out + 1] = id
  out[#out + 1] = claim
  out[#out + 1] = redis.call('HGETALL', job_key)
end

if ARGV[7] and ARGV[7] ~= '' then
  start(ARGV[7])
end
local want = n + tonumber(ARGV[6])  -- beyond the held id
for _ = 1, 4 * want + 16 do
  if n >= want then
    break
  end
  local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not id then
    break
  end
  start(id)
end
return out
