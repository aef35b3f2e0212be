#!lua
-- append_logs: add a batch of log lines to a running job, fenced by its claim.
--
-- KEYS[1] gm:{wg:G}:job:<id>      HASH   the record
-- KEYS[2] gm:{wg:G}:logs:<id>     STREAM log lines
-- KEYS[3] gm:{wg:G}:redact:<id>   SET    secrets the job read (their values must not be logged)
-- ARGV[1] claim of the writer's attempt
-- ARGV[2] stream cap
-- ARGV[3] attempt number
-- ARGV[4] how many redaction entries the writer already applies
-- ARGV[5] log bytes kept per job: a line that would pass it is dropped and
--         counted (record fields log_bytes, log_dropped_lines, log_dropped_bytes);
--         the first dropped line is replaced by one marker line
-- ARGV[6..] ts, stream, line, ts, stream, line, ...
--
-- Returns the number of lines taken (appended or counted as dropped); -1 when the writer's attempt is not
-- the job's current one (a worker presumed dead must not log into a new
-- attempt); -2, writing nothing, when the job read secrets the writer does not
-- know of yet: it must fetch them, redact, and send the batch again.

local cur = redis.call('HMGET', KEYS[1], 'status', 'claim')
if cur[1] ~= 'running' or cur[2] ~= ARGV[1] then
  return -1
end
if redis.call('SCARD', KEYS[3]) ~= tonumber(ARGV[4]) then
  return -2
end
local limit = tonumber(ARGV[5])
local used = tonumber(redis.call('HGET', KEYS[1], 'log_bytes') or '0')
-- Once a line was dropped every later one is too, so what is kept is a prefix.
local cut = redis.call('HEXISTS', KEYS[1], 'log_dropped_lines') == 1
local n, dropped, dropped_bytes = 0, 0, 0
for i = 6, #ARGV, 3 do
  local size = #ARGV[i + 2]
  if not cut and used + size <= limit then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
               'a', ARGV[3], 't', ARGV[i], 's', ARGV[i + 1], 'l', ARGV[i + 2])
    used = used + size
  else
    if not cut then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'a', ARGV[3], 't', ARGV[i],
                 's', 'stderr', 'l', '[gristmill: this job reached its log limit of ' .. limit ..
                 ' bytes; later lines are dropped (counted in the record)]')
      cut = true
    end
    dropped = dropped + 1
    dropped_bytes = dropped_bytes + size
  end
  n = n + 1
end
redis.call('HSET', KEYS[1], 'log_bytes', used)
if dropped > 0 then
  redis.call('HINCRBY', KEYS[1], 'log_dropped_lines', dropped)
  redis.call('HINCRBY', KEYS[1], 'log_dropped_bytes', dropped_bytes)
end
return n
