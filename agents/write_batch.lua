-- Apply one batch's writes for ONE community, atomically, if the writer still owns the
-- input partitions they come from. The rules ran in the worker (streams/evaluator.py);
-- this script only checks the fence and runs the commands it is given.
--
-- KEYS[1]: the community's offsets hash (in the community's slot): per input partition
-- ("topic|partition") "epoch offset stream_ms".
-- ARGV[1]: one JSON array {fences, zincr, hincr, hsets, commands, threads, scores}
-- (packed by agents/writer.py):
--   fences:   {{field, epoch, offset, stream_ms}, ...}. If a stored epoch is newer
--             than the writer's, a newer owner has the partition: nothing is written.
--             An offset of -1 checks without recording.
--   zincr, hincr: {key = {name = amount, ...}, ...}: the batch's increments added up
--             per key (JSON objects: '{}' when there are none). A key with one name
--             takes ZINCRBY / HINCRBY; with more,
--             one read of the current values and one variadic write of the sums per
--             chunk (ZMSCORE + ZADD, HMGET + HSET): a redis.call costs more than the
--             element it changes.
--   hsets:    {{key, field, i, field, value, ...}, ...}: HSET with the value of the
--             first field in ARGV[i] (a JSON document, passed as it is: never decoded).
--   commands: {{name, arg, ...}, ...}, every argument a string, run in order.
--   threads:  {{op, thread key, member, at ms, expire at, histogram key}, ...}: the
--             first-response join, the one community-wide read-then-write (a thread is
--             opened and answered by members of different partitions).
--   scores:   {key, {score, member, ...}, ...}: leaderboard scores the worker knows,
--             set with ZADD.
-- Returns {'ok', key, member, score, ...} (written now, with the new scores of zincr's
-- names), {'ok'} (written before) or {'fenced', field, stored value}.
local p = cjson.decode(ARGV[1])
local fences, zincr, hincr, hsets, commands, threads = p[1], p[2], p[3], p[4], p[5], p[6]
local scores = p[7]

-- One read and one write of the offsets hash per batch, whatever its partitions.
local fields = {}
for i, f in ipairs(fences) do fields[i] = f[1] end
local recorded = {}
if #fields > 0 then recorded = redis.call('HMGET', KEYS[1], unpack(fields)) end
local done = false
for i, f in ipairs(fences) do
  local stored = recorded[i]
  if stored then
    local epoch, offset = string.match(stored, '^(%d+) (-?%d+)')
    if tonumber(epoch) > tonumber(f[2]) then return {'fenced', f[1], stored} end
    -- The same write again (its reply was lost and the writer retried): the call is
    -- atomic, so one recorded offset at or past the batch's says it is all there.
    if f[3] ~= '-1' and tonumber(offset) >= tonumber(f[3]) then done = true end
  end
end
if done then return {'ok'} end

-- Names per read and write (unpack() is bounded by Lua's C stack).
local CHUNK = 500

-- Add each amount of row (name -> amount) to the name's value in key. One name: the
-- increment command (incr). More: read, add up, write back, per chunk. Values are
-- integers well inside a double's exact range; tostring keeps them integral. Sorted-set
-- commands take the score before the member (score_first), hash commands the field
-- before the value.
-- The sums are appended to sums (when given) as key, name, sum.
local function add_up(key, row, incr, read, write, score_first, sums)
  local name, amount = next(row)
  if name == nil then return end
  if next(row, name) == nil then
    local value
    if score_first then
      value = redis.call(incr, key, amount, name)
    else
      value = redis.call(incr, key, name, amount)
    end
    if sums then
      sums[#sums + 1], sums[#sums + 2], sums[#sums + 3] = key, name, tostring(value)
    end
    return
  end
  local names, amounts, n = {}, {}, 0
  for field, value in pairs(row) do
    n = n + 1
    names[n], amounts[n] = field, value
  end
  for first = 1, #names, CHUNK do
    local last = math.min(first + CHUNK - 1, #names)
    local old = redis.call(read, key, unpack(names, first, last))
    local args = {}
    for j = first, last do
      local value = (tonumber(old[j - first + 1]) or 0) + amounts[j]
      local at = 2 * (j - first)
      if score_first then
        args[at + 1], args[at + 2] = value, names[j]
      else
        args[at + 1], args[at + 2] = names[j], value
      end
      if sums then
        sums[#sums + 1], sums[#sums + 2], sums[#sums + 3] = key, names[j], tostring(value)
      end
    end
    redis.call(write, key, unpack(args))
  end
end

local answer = {'ok'}
for key, row in pairs(zincr) do add_up(key, row, 'ZINCRBY', 'ZMSCORE', 'ZADD', true, answer) end
for key, row in pairs(hincr) do add_up(key, row, 'HINCRBY', 'HMGET', 'HSET', false) end
for i = 1, #scores, 2 do redis.call('ZADD', scores[i], unpack(scores[i + 1])) end
for _, h in ipairs(hsets) do redis.call('HSET', h[1], h[2], ARGV[h[3]], unpack(h, 4)) end
for _, c in ipairs(commands) do redis.call(unpack(c)) end

local offsets = {}
for _, f in ipairs(fences) do
  if f[3] ~= '-1' then
    offsets[#offsets + 1] = f[1]
    offsets[#offsets + 1] = f[2] .. ' ' .. f[3] .. ' ' .. f[4]
  end
end
if #offsets > 0 then redis.call('HSET', KEYS[1], unpack(offsets)) end

-- First-response histogram bounds, seconds (agents/health.py reads the same fields).
local BOUNDS = {60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800}

local function record_response(thread, hist, opened_at, at)
  local delta = (at - opened_at) / 1000
  redis.call('HSET', thread, 'answered', at)
  local field = 'le:+Inf'
  for _, bound in ipairs(BOUNDS) do
    if delta <= bound then field = 'le:' .. bound break end
  end
  redis.call('HINCRBY', hist, field, 1)
  redis.call('HINCRBYFLOAT', hist, 'sum', delta)
  redis.call('HINCRBY', hist, 'count', 1)
end

-- A reply: the first one by someone other than the author answers the thread. Replies
-- can arrive before their thread's opening event (another partition): they wait in
-- 'early:<member>' fields until the thread opens.
local function reply(thread, hist, member, at, expire_at)
  local opened = redis.call('HMGET', thread, 'opened_at', 'author', 'answered')
  if opened[3] ~= false then return end
  if opened[1] == false then
    local field = 'early:' .. member
    local earlier = tonumber(redis.call('HGET', thread, field))
    if earlier == nil or at < earlier then redis.call('HSET', thread, field, at) end
    redis.call('EXPIREAT', thread, expire_at)
    return
  end
  if opened[2] == member or at < tonumber(opened[1]) then return end
  record_response(thread, hist, tonumber(opened[1]), at)
end

local function open(thread, hist, author, at, expire_at)
  if redis.call('HSETNX', thread, 'opened_at', at) == 0 then return end
  redis.call('HSET', thread, 'author', author)
  redis.call('EXPIREAT', thread, expire_at)
  local fields = redis.call('HGETALL', thread)
  local first, early = nil, {}
  for j = 1, #fields, 2 do
    local name = fields[j]
    if string.sub(name, 1, 6) == 'early:' then
      early[#early + 1] = name
      local t = tonumber(fields[j + 1])
      if string.sub(name, 7) ~= author and t >= at and (first == nil or t < first) then first = t end
    end
  end
  if #early > 0 then redis.call('HDEL', thread, unpack(early)) end
  if first ~= nil then record_response(thread, hist, at, first) end
end

for _, t in ipairs(threads) do
  local op, key, member, at, expire_at, hist = t[1], t[2], t[3], tonumber(t[4]), t[5], t[6]
  if op == 'open' then open(key, hist, member, at, expire_at) else reply(key, hist, member, at, expire_at) end
end
return answer
