-- Apply a batch of planned activity effects for ONE community, atomically.
-- The argument layout is documented in streams/effects.py (the planner writes it).
--
-- KEYS[1]: a key in the community's hash slot (routes the call on Redis Cluster).
-- An event's effects run only when SET NX on its seen-key succeeds, so a redelivered
-- event changes nothing. A chat message over a moderation limit is "moderated": its ops
-- and award checks are skipped and the flag of its burst is raised or extended.
-- Returns {flags, awards, moderation flags, segment changes}: a code per event (1
-- applied, 0 duplicate, 2 moderated) and the ids recorded by this call, in order.
--
-- ARGV[1] is the mode: 'apply' (a batch of events: ARGV[18] starts the key table) or
-- 'sweep' (segment downgrades: ARGV[18] is the member-key prefix and ARGV[19..] the
-- member ids to look at).
-- All arguments arrive as ONE JSON array of strings (agents/store.py packs them): one
-- bulk string is far cheaper for the client to encode and for Redis to parse than ~100.
local ARGV = cjson.decode(ARGV[1])
local mode = ARGV[1]
local ttl = tonumber(ARGV[2])
local awards, by_time, award_outbox, award_counts = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local flags_hash, flag_outbox, mod_counts = ARGV[7], ARGV[8], ARGV[9]
local seg_changes, seg_outbox, seg_index = ARGV[10], ARGV[11], ARGV[12]
local now_ms, t_mid, t_high, now_day = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16])
local grace_ms = tonumber(ARGV[17])
local n = #ARGV
local codes, fired_awards, fired_flags, fired_segments = {}, {}, {}, {}
-- Keys written by an applied event: each gets its EXPIREAT once, at the end of the call.
local touched = {}

-- First-response histogram bounds, seconds (the collector reads them from the fields).
local BOUNDS = {60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800}
local RANK = {beginner = 0, intermediate = 1, advanced = 2}

local function run_length(key, day, cap)
  local length = 1
  local d = day - 1
  while length < cap and redis.call('SISMEMBER', key, tostring(d)) == 1 do
    length = length + 1
    d = d - 1
  end
  d = day + 1
  while length < cap and redis.call('SISMEMBER', key, tostring(d)) == 1 do
    length = length + 1
    d = d + 1
  end
  return length
end

local function score_30d(key)
  local score = 0
  local fields = redis.call('HGETALL', key)
  for j = 1, #fields, 2 do
    local day = tonumber(fields[j])
    if day <= now_day - 30 then
      redis.call('HDEL', key, fields[j])
    elseif day <= now_day then
      score = score + tonumber(fields[j + 1])
    end
  end
  return score
end

local function segment_for(score)
  if score >= t_high then return 'advanced' end
  if score >= t_mid then return 'intermediate' end
  return 'beginner'
end

local function change_segment(member_key, member, current, target, at_ms, score)
  redis.call('HSET', member_key, 'segment', target)
  redis.call('HDEL', member_key, 'below_since')
  if current ~= 'beginner' then redis.call('ZREM', seg_index .. current, member) end
  if target ~= 'beginner' then redis.call('ZADD', seg_index .. target, at_ms, member) end
  local id = string.sub(redis.sha1hex(seg_changes .. '\31' .. member .. '\31' .. current .. '\31' .. target .. '\31' .. at_ms), 1, 32)
  redis.call('HSET', seg_changes, id, cjson.encode({
    member_id = member, from = current, to = target, at_ms = tonumber(at_ms), score = score,
  }))
  redis.call('ZADD', seg_outbox, at_ms, id)
  fired_segments[#fired_segments + 1] = id
end

-- On an event: upgrade at once; a lower score only starts the downgrade grace.
-- In the sweep: move down once the score has stayed low for the whole grace.
local function judge_segment(member_key, score_key, member, at_ms, sweeping)
  local score = score_30d(score_key)
  local current = redis.call('HGET', member_key, 'segment') or 'beginner'
  local target = segment_for(score)
  if RANK[target] > RANK[current] then
    if not sweeping then change_segment(member_key, member, current, target, at_ms, score) end
  elseif RANK[target] < RANK[current] then
    local below = tonumber(redis.call('HGET', member_key, 'below_since'))
    if below == nil then
      redis.call('HSET', member_key, 'below_since', now_ms)
    elseif sweeping and now_ms - below >= grace_ms then
      change_segment(member_key, member, current, target, now_ms, score)
    end
  else
    redis.call('HDEL', member_key, 'below_since')
  end
end

-- Key-safe member ids, exactly as streams/keys.py escape() writes them.
local function escape(value)
  return (string.gsub(value, '[^%w_%.%-~]', function(c) return string.format('%%%02X', string.byte(c)) end))
end

if mode == 'sweep' then
  local member_prefix = ARGV[18]
  for j = 19, n do
    local key = member_prefix .. escape(ARGV[j])
    judge_segment(key, key .. ':d30', ARGV[j], now_ms, true)
  end
  return {{}, {}, {}, fired_segments}
end

-- A moderation gate: returns true when the message is over the limit.
local function over_limit(rule, key, window, limit, channel, event_id, at)
  local since = '(' .. (at - window)
  local count
  if rule == 'flood' then
    count = redis.call('ZCOUNT', key, since, at)
    redis.call('ZADD', key, at, event_id)
  else
    count = redis.call('ZCOUNT', key, since, at)
    local own = tonumber(redis.call('ZSCORE', key, channel))
    if own ~= nil and own > at - window and own <= at then count = count - 1 end
    redis.call('ZADD', key, 'GT', at, channel)
  end
  redis.call('PEXPIRE', key, window * 2)
  return count >= limit
end

local function raise_flag(rule, key, window, channel, flag_key, flag_id, burst_key, member, event_id, at)
  local open_end = tonumber(redis.call('HGET', flag_key, 'end'))
  if open_end ~= nil and open_end >= at - window then
    -- Same burst: attach to the open flag, publish nothing new.
    if at > open_end then redis.call('HSET', flag_key, 'end', at) end
    redis.call('RPUSH', redis.call('HGET', flag_key, 'burst'), event_id)
    return
  end
  local ids, start = {event_id}, at
  if rule == 'flood' then
    -- The messages that made the flood (at most 100 of them, oldest first).
    local window_ids = redis.call('ZRANGEBYSCORE', key, '(' .. (at - window), at, 'WITHSCORES', 'LIMIT', 0, 100)
    ids = {}
    for j = 1, #window_ids, 2 do
      ids[#ids + 1] = window_ids[j]
      local t = tonumber(window_ids[j + 1])
      if t < start then start = t end
    end
  else
    local others = redis.call('ZRANGEBYSCORE', key, '(' .. (at - window), at, 'WITHSCORES')
    for j = 2, #others, 2 do
      local t = tonumber(others[j])
      if t < start then start = t end
    end
  end
  redis.call('HSET', flag_key, 'id', flag_id, 'end', at, 'burst', burst_key)
  redis.call('PEXPIRE', flag_key, window * 2 + 3600000)
  redis.call('RPUSH', burst_key, unpack(ids))
  redis.call('HSET', flags_hash, flag_id, cjson.encode({
    member_id = member, channel = channel, rule = rule, start_ms = start, end_ms = at, event_ids = ids,
  }))
  redis.call('ZADD', flag_outbox, at, flag_id)
  redis.call('HINCRBY', mod_counts, rule, 1)
  fired_flags[#fired_flags + 1] = flag_id
end

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
local function first_response(thread, hist, member, at)
  local opened = redis.call('HMGET', thread, 'opened_at', 'author', 'answered')
  if opened[3] ~= false then return end
  if opened[1] == false then
    local field = 'early:' .. member
    local earlier = tonumber(redis.call('HGET', thread, field))
    if earlier == nil or at < earlier then redis.call('HSET', thread, field, at) end
    touched[thread] = true
    return
  end
  if opened[2] == member or at < tonumber(opened[1]) then return end
  record_response(thread, hist, tonumber(opened[1]), at)
end

local function open_thread(thread, author, at)
  if redis.call('HSETNX', thread, 'opened_at', at) == 0 then return end
  redis.call('HSET', thread, 'author', author)
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
  if first ~= nil then
    local base, kind = string.match(thread, '^(.*):thread:([^:]+):')
    record_response(thread, base .. ':ttfr:' .. kind, at, first)
  end
end

-- The key table (see streams/effects.py): ops name keys by index.
-- K maps an op's index (as sent, a string) to its key; E holds the expiry of the keys
-- that have one (a key kept forever is not in E, so most ops mark nothing).
local K, E = {}, {}
local nkeys = tonumber(ARGV[18])
for j = 1, nkeys do
  local key, expire_at = ARGV[17 + 2 * j], ARGV[18 + 2 * j]
  K[tostring(j)] = key
  if expire_at ~= '0' then E[key] = expire_at end
end
local i = 19 + 2 * nkeys
-- Upper-case ops are added up here and written once per (key, field) at the end: a busy
-- leaderboard or counter takes one command per call, not one per event.
local zsum, hsum, members = {}, {}, {}
local extreme = {LT = {}, GT = {}, MIN = {}, MAX = {}}
-- Whether value replaces current under op: the smaller for LT/MIN, the larger for GT/MAX.
local function beats(op, value, current)
  if current == nil then return true end
  if op == 'LT' or op == 'MIN' then return value < current end
  return value > current
end
while i <= n do
  local seen, nops, nchecks, ngates = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local badges_key, member, event_id, at_ms = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local member_key, score_key = ARGV[i + 8], ARGV[i + 9]
  local at = tonumber(at_ms)
  i = i + 10
  local fresh = redis.call('SET', seen, '1', 'NX', 'EX', ttl)
  local moderated = false
  for _ = 1, ngates do
    if fresh then
      local rule, key, window, limit = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
      local channel, flag_key, flag_id, burst_key = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
      if over_limit(rule, key, window, limit, channel, event_id, at) and not moderated then
        moderated = true
        raise_flag(rule, key, window, channel, flag_key, flag_id, burst_key, member, event_id, at)
      end
    end
    i = i + 8
  end
  local live = fresh and not moderated
  for _ = 1, nops do
    if live then
      local op, field, amount = ARGV[i], ARGV[i + 2], ARGV[i + 3]
      local key = K[ARGV[i + 1]]
      if op == 'Z' or op == 'H' then
        local sums = (op == 'Z' and zsum or hsum)
        local t = sums[key]
        if t == nil then t = {}; sums[key] = t end
        t[field] = (t[field] or 0) + tonumber(amount)
      elseif op == 'S' then
        local t = members[key]
        if t == nil then t = {}; members[key] = t end
        t[field] = true
      elseif extreme[op] ~= nil then
        local t = extreme[op][key]
        if t == nil then t = {}; extreme[op][key] = t end
        local value = tonumber(amount)
        if beats(op, value, t[field]) then t[field] = value end
      elseif op == 'h' then
        redis.call('HINCRBY', key, field, amount)
      elseif op == 's' then
        redis.call('SADD', key, field)
      elseif op == 'open' then
        open_thread(key, field, tonumber(amount))
      elseif op == 'reply' then
        first_response(key, field, member, tonumber(amount))
      else
        return redis.error_reply('unknown op ' .. op)
      end
      if op ~= 'reply' and E[key] ~= nil then touched[key] = true end
    end
    i = i + 4
  end
  if live and score_key ~= '' then
    judge_segment(member_key, score_key, member, at_ms, false)
  end
  for _ = 1, nchecks do
    local award_id, field, badge, tier, nconds = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4])
    i = i + 5
    local met = live and redis.call('HEXISTS', badges_key, field) == 0
    for _ = 1, nconds do
      if met then
        local test, key, cfield, threshold = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
        local value
        if test == 'h' then
          value = tonumber(redis.call('HGET', key, cfield)) or 0
        elseif test == 's' then
          value = redis.call('SCARD', key)
        elseif test == 'run' then
          value = run_length(key, tonumber(cfield), threshold)
        else
          return redis.error_reply('unknown test ' .. test)
        end
        met = value >= threshold
      end
      i = i + 4
    end
    if met then
      redis.call('HSET', badges_key, field, at_ms)
      redis.call('HSET', awards, award_id, cjson.encode({
        member_id = member, badge = badge, tier = tier, at_ms = at, evidence = event_id,
      }))
      redis.call('ZADD', by_time, at_ms, award_id)
      redis.call('ZADD', award_outbox, at_ms, award_id)
      redis.call('HINCRBY', award_counts, field, 1)
      fired_awards[#fired_awards + 1] = award_id
    end
  end
  if not fresh then
    codes[#codes + 1] = 0
  elseif moderated then
    codes[#codes + 1] = 2
  else
    codes[#codes + 1] = 1
  end
end
-- Write the added-up ops. Integers up to 2^53 are exact in Lua numbers; '%.0f'
-- writes them without an exponent.
local function int(x) return string.format('%.0f', x) end
for key, t in pairs(zsum) do
  for field, amount in pairs(t) do redis.call('ZINCRBY', key, int(amount), field) end
end
for key, t in pairs(hsum) do
  for field, amount in pairs(t) do redis.call('HINCRBY', key, field, int(amount)) end
end
-- Multi-member commands are sent in chunks to stay well inside Lua's stack limit. ZADD
-- items come in (score, member) pairs and a chunk ends on an even count, never between.
local function in_chunks(head, items)
  local args = {unpack(head)}
  for _, item in ipairs(items) do
    args[#args + 1] = item
    if #args - #head >= 1000 then
      redis.call(unpack(args))
      args = {unpack(head)}
    end
  end
  if #args > #head then redis.call(unpack(args)) end
end
for key, t in pairs(members) do
  local items = {}
  for field in pairs(t) do items[#items + 1] = field end
  in_chunks({'SADD', key}, items)
end
for _, op in ipairs({'LT', 'GT'}) do
  for key, t in pairs(extreme[op]) do
    local items = {}
    for field, value in pairs(t) do
      items[#items + 1] = int(value)
      items[#items + 1] = field
    end
    in_chunks({'ZADD', key, op}, items)
  end
end
for _, op in ipairs({'MIN', 'MAX'}) do
  for key, fields in pairs(extreme[op]) do
    for field, value in pairs(fields) do
      if beats(op, value, tonumber(redis.call('HGET', key, field))) then
        redis.call('HSET', key, field, int(value))
      end
    end
  end
end
for key in pairs(touched) do
  if E[key] ~= nil then redis.call('EXPIREAT', key, E[key]) end
end
return {codes, fired_awards, fired_flags, fired_segments}
