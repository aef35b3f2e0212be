-- _log_budget: the per-job log byte budget, shared by append_logs.lua and complete.lua.
-- Not a script of its own: common/luascripts.py puts this text where a script has the line
-- `-- include: _log_budget.lua`, before the script is loaded and its SHA taken.
--
-- append_within_budget(job_key, logs_key, cap, attempt, limit, lines, first, last)
--   job_key   the record (HASH): reads and writes log_bytes, log_dropped_lines, log_dropped_bytes
--   logs_key  the job's log STREAM, capped at about `cap` entries
--   attempt   the attempt number each line is written with
--   limit     log bytes kept per job: a line that would pass it is dropped and counted; the
--             first dropped line is replaced by one marker line
--   lines[first..last]  ts, stream, line, ts, stream, line, ... (a script passes ARGV)
-- Returns the number of lines taken (appended or counted as dropped).
local function append_within_budget(job_key, logs_key, cap, attempt, limit, lines, first, last)
  local used = tonumber(redis.call('HGET', job_key, 'log_bytes') or '0')
  -- Once a line was dropped every later one is too, so what is kept is a prefix.
  local cut = redis.call('HEXISTS', job_key, 'log_dropped_lines') == 1
  local n, dropped, dropped_bytes = 0, 0, 0
  for i = first, last, 3 do
    local size = #lines[i + 2]
    if not cut and used + size <= limit then
      redis.call('XADD', logs_key, 'MAXLEN', '~', cap, '*',
                 'a', attempt, 't', lines[i], 's', lines[i + 1], 'l', lines[i + 2])
      used = used + size
    else
      if not cut then
        redis.call('XADD', logs_key, 'MAXLEN', '~', cap, '*', 'a', attempt, 't', lines[i],
                   's', 'stderr', 'l', '[gristmill: this job reached its log limit of ' .. limit ..
                   ' bytes; later lines are dropped (counted in the record)]')
        cut = true
      end
      dropped = dropped + 1
      dropped_bytes = dropped_bytes + size
    end
    n = n + 1
  end
  redis.call('HSET', job_key, 'log_bytes', used)
  if dropped > 0 then
    redis.call('HINCRBY', job_key, 'log_dropped_lines', dropped)
    redis.call('HINCRBY', job_key, 'log_dropped_bytes', dropped_bytes)
  end
  return n
end
