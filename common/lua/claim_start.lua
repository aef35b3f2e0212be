#!lua
-- claim_start: take up to K due ids off ready into a worker's running list and start each,
-- in one call (the worker blocks in BLMOVE only when ready is empty, and then sends this
-- call in the same write, behind the BLMOVE: see ARGV[8]).
--
-- KEYS[1] gm:{wg:G}:ready               LIST   due job ids, oldest first
-- KEYS[2] gm:{wg:G}:running:<worker>    LIST   ids the worker holds
-- KEYS[3] gm:{wg:G}:events              STREAM lifecycle events
-- KEYS[4] gm:{wg:G}:ix:status:queued    ZSET   listing index the jobs leave
-- KEYS[5] gm:{wg:G}:ix:status:running   ZSET   listing index the jobs join
-- ARGV[1] prefix of the group's job records, "gm:{wg:G}:job:" (see below)
-- ARGV[2] worker id
-- ARGV[3] now (epoch ms); empty with ARGV[8]
-- ARGV[4] claim prefix: fresh and random (hex); job n of this call gets claim <prefix><n as 4 hex digits>
-- ARGV[5] events stream cap
-- ARGV[6] K: how many jobs to start from ready at most (ids of canceled jobs taken do not
--         count; at most 4K + 16 ids are taken off ready in one call)
-- ARGV[7] optional: an id the worker already moved into its running list (a BLMOVE), started
--         first
-- ARGV[8] optional: '1' when this call rides behind the worker's BLMOVE (ready -> the tail of
--         its running list) in one write: Redis runs it the moment the BLMOVE returns, so
--         the sender knew neither the id nor the time. The held id is then the running list's
--         last, unless that is a job this worker runs (the BLMOVE moved nothing: its time ran
--         out or the worker interrupted it), when nothing at all is started; now is the
--         server's TIME.
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
local now = ARGV[3]
local held = ARGV[7]
if ARGV[8] == '1' then
  held = redis.call('LINDEX', KEYS[2], -1)
  if not held then
    return out
  end
  local cur = redis.call('HMGET', ARGV[1] .. held, 'status', 'worker')
  if cur[1] == 'running' and cur[2] == ARGV[2] then
    return out
  end
  local time = redis.call('TIME')
  now = string.format('%d', tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
end

local function start(id)
  local job_key = ARGV[1] .. id
  if redis.call('HGET', job_key, 'status') ~= 'queued' then
    redis.call('LREM', KEYS[2], 0, id)
    return
  end
  n = n + 1
  local claim = ARGV[4] .. string.format('%04x', n)
  redis.call('HSET', job_key, 'status', 'running', 'started_at', now, 'worker', ARGV[2],
             'claim', claim)
  redis.call('HINCRBY', job_key, 'attempt', 1)
  move_status(job_key, KEYS[4], KEYS[5])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'event', 'started', 'id', id,
             'worker', ARGV[2])
  out[#out + 1] = id
  out[#out + 1] = claim
  out[#out + 1] = redis.call('HGETALL', job_key)
end

if held and held ~= '' then
  start(held)
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
