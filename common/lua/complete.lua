#!lua
-- complete: write the final outcome of a job's attempt, fenced by worker and claim.
--
-- KEYS[1] gm:{wg:G}:job:<id>           HASH   the record
-- KEYS[2] gm:{wg:G}:running:<worker>   LIST   ids the worker holds
-- KEYS[3] gm:{wg:G}:completed          ZSET   completed ids by completed_at
-- KEYS[4] gm:{wg:G}:logs:<id>          STREAM the job's logs
-- KEYS[5] gm:{wg:G}:done:<id>          LIST   wakes waiters
-- KEYS[6] gm:{wg:G}:events             STREAM lifecycle events
-- KEYS[7] gm:{wg:G}:attempts:<id>      LIST   one msgpack entry per finished attempt
-- KEYS[8] gm:{wg:G}:ix:status:running  ZSET   listing index the job leaves
-- KEYS[9] gm:{wg:G}:ix:status:<final>  ZSET   listing index the job joins
-- KEYS[10] gm:{wg:G}:ixtrim            ZSET   completed jobs' index entries, for the trim
-- KEYS[11..14] gm:{wg:G}:ix:by:<created_by>:live, ix:as:<permissioned_as>:live,
--              ix:by:<created_by>:<final>, ix:as:<permissioned_as>:<final>   ZSET
-- KEYS[15] gm:{wg:G}:flownotify        LIST   outcomes of flow steps, for their flows
-- KEYS[16] gm:{wg:G}:redact:<id>       SET    secrets the job read (their values must not be logged)
-- ARGV[1] job id
-- ARGV[2] worker id
-- ARGV[3] claim token of the attempt
-- ARGV[4] now (epoch ms)
-- ARGV[5] retention in seconds (TTL of the record, its logs and attempts)
-- ARGV[6] TTL of the done list in seconds
-- ARGV[7] events stream cap
-- ARGV[8] final status: success | failure | canceled
-- ARGV[9] this attempt's history entry (msgpack)
-- ARGV[10] the step's outcome for its flow (JSON), or '' for a job of no flow: pushed to
--          flownotify by this same script, so the outcome exists exactly when the completion does
-- ARGV[11] how many redaction entries the writer applies to the lines and the outcome, or ''
--          for no check: with a number, a job that read more secrets writes nothing (-2)
-- ARGV[12] n: the attempt's last log lines, sent with its outcome (as append_logs.lua)
-- ARGV[13] stream cap
-- ARGV[14] log bytes kept per job (as append_logs.lua ARGV[5])
-- ARGV[15 .. 14+3n] ts, stream, line, ...
-- ARGV[15+3n ..] result fields: field, value, ...
--
-- Returns 1 when completed now, 2 when this claim had already completed it (a
-- retried call after a lost reply: its lines are not written twice), 0 when
-- refused: the job's current attempt is not this worker's claim (it was presumed
-- dead and the job moved on); -2, writing nothing, when the job read secrets the
-- writer does not know of yet: it must fetch them, redact, and call again.

local nlines = tonumber(ARGV[12] or '')
if #KEYS ~= 16 or not nlines or #ARGV < 14 + 3 * nlines or (#ARGV - 14 - 3 * nlines) % 2 ~= 0 then
  -- Checked before any write: a script that fails midway keeps what it wrote.
  return redis.error_reply('ERR complete.lua: wrong number of keys or arguments')
end
-- include: _log_budget.lua

-- Moves the job's listing-index member (from the record's `ix` field) between status sets.
local function move_status(job_key, from_key, to_key)
  local ix = redis.call('HGET', job_key, 'ix')
  if ix then
    local m = string.match(ix, '^[^\t]*')
    redis.call('ZREM', from_key, m)
    redis.call('ZADD', to_key, 0, m)
  end
  return ix
end
-- A completed job leaves its identities' live sets for their `final` ones (keys
-- by_live, as_live, by_final, as_final), and its index entries are recorded for the
-- retention trim. `ix` is the record's ix field (nil: the job predates the indexes).
local function finish(job_key, ix, id_keys, trim_key, completed_at, final)
  if not ix then
    return
  end
  local m = string.match(ix, '^[^\t]*')
  redis.call('ZREM', id_keys[1], m)
  redis.call('ZREM', id_keys[2], m)
  redis.call('ZADD', id_keys[3], 0, m)
  redis.call('ZADD', id_keys[4], 0, m)
  local who = redis.call('HMGET', job_key, 'created_by', 'permissioned_as')
  redis.call('ZADD', trim_key, completed_at, ix .. '\tstatus:' .. final .. '\tby:' ..
             (who[1] or '') .. ':' .. final .. '\tas:' .. (who[2] or '') .. ':' .. final)
end

local cur = redis.call('HMGET', KEYS[1], 'status', 'worker', 'claim')
if cur[2] ~= ARGV[2] or cur[3] ~= ARGV[3] then
  return 0
end
if cur[1] ~= 'running' then
  if cur[1] == 'success' or cur[1] == 'failure' or cur[1] == 'canceled' then
    return 2
  end
  return 0
end
if ARGV[11] ~= '' and redis.call('SCARD', KEYS[16]) ~= tonumber(ARGV[11]) then
  return -2
end
if nlines > 0 then
  -- The last batch, kept and cut exactly as append_logs.lua does; this claim's attempt
  -- (fenced above).
  append_within_budget(KEYS[1], KEYS[4], ARGV[13], redis.call('HGET', KEYS[1], 'attempt') or '0',
                       tonumber(ARGV[14]), ARGV, 15, 14 + 3 * nlines)
end
redis.call('HSET', KEYS[1], 'status', ARGV[8], 'completed_at', ARGV[4])
if #ARGV >= 15 + 3 * nlines then
  redis.call('HSET', KEYS[1], unpack(ARGV, 15 + 3 * nlines))
end
local cut = redis.call('HMGET', KEYS[1], 'log_dropped_lines', 'log_dropped_bytes', 'attempt')
if cut[1] then
  redis.call('XADD', KEYS[4], '*', 'a', cut[3] or '0', 't', ARGV[4],
             's', 'stderr', 'l', '[gristmill: ' .. cut[1] .. ' log lines (' .. cut[2] ..
             ' bytes) beyond the log limit were dropped]')
end
redis.call('RPUSH', KEYS[7], ARGV[9])
finish(KEYS[1], move_status(KEYS[1], KEYS[8], KEYS[9]), {KEYS[11], KEYS[12], KEYS[13], KEYS[14]},
       KEYS[10], ARGV[4], ARGV[8])
redis.call('LREM', KEYS[2], 0, ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[4], ARGV[5])
redis.call('EXPIRE', KEYS[7], ARGV[5])
if ARGV[10] ~= '' then
  redis.call('RPUSH', KEYS[15], ARGV[10])
end
redis.call('LPUSH', KEYS[5], ARGV[8])
redis.call('EXPIRE', KEYS[5], ARGV[6])
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[7], '*', 'event', 'completed', 'id', ARGV[1],
           'status', ARGV[8])
return 1
