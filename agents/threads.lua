-- The first-response join of one batch in ONE community: the one community-wide
-- read-then-write the engine keeps in Redis (a thread is opened and answered by members
-- of different partitions, so no worker owns it). Run inside the batch's MULTI/EXEC
-- (agents/writer.py), after the batch's other writes.
--
-- KEYS[1]: the community's offsets hash (routes the call to the community's slot).
-- ARGV[1]: JSON {{op, thread key, member, at ms, expire at, histogram key}, ...}.
local threads = cjson.decode(ARGV[1])

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
return 'ok'
