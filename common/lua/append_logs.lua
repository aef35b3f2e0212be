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

-- include: _log_budget.lua

local cur = redis.call('HMGET', KEYS[1], 'status', 'claim')
if cur[1] ~= 'running' or cur[2] ~= ARGV[1] then
  return -1
end
if redis.call('SCARD', KEYS[3]) ~= tonumber(ARGV[4]) then
  return -2
end
return append_within_budget(KEYS[1], KEYS[2], ARGV[2], ARGV[3], tonumber(ARGV[5]), ARGV, 6, #ARGV)
