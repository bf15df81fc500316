-- Apply a batch of planned activity effects for ONE community, atomically.
--
-- KEYS[1]: a key in the community's hash slot (routes the call on Redis Cluster).
-- ARGV[1]: seconds to remember an event_id; ARGV[2..4]: the community's awards hash,
-- awards-by-time sorted set and award outbox sorted set.
-- Then, per event (see streams/effects.py): seen-key, op count, check count, badges-key,
-- member_id, event_id, occurred_at ms; the ops (5 args each); the award checks.
--
-- An event's ops and checks run only when SET NX on its seen-key succeeds, so a
-- redelivered event changes nothing. Returns {flags, fired}: flags holds 1 (applied) or
-- 0 (duplicate) per event, fired the award ids recorded by this call, in order.
local ttl = tonumber(ARGV[1])
local awards, by_time, outbox = ARGV[2], ARGV[3], ARGV[4]
local i = 5
local n = #ARGV
local flags, fired = {}, {}

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

while i <= n do
  local seen, nops, nchecks = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local badges_key, member, event_id, at_ms = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  i = i + 7
  local fresh = redis.call('SET', seen, '1', 'NX', 'EX', ttl)
  if fresh then
    for _ = 1, nops do
      local op, key, field, amount, expire_at = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
      if op == 'z' then
        redis.call('ZINCRBY', key, amount, field)
      elseif op == 'h' then
        redis.call('HINCRBY', key, field, amount)
      elseif op == 'min' or op == 'max' then
        local current = tonumber(redis.call('HGET', key, field))
        local value = tonumber(amount)
        if current == nil or (op == 'min' and value < current) or (op == 'max' and value > current) then
          redis.call('HSET', key, field, amount)
        end
      elseif op == 's' then
        redis.call('SADD', key, field)
      else
        return redis.error_reply('unknown op ' .. op)
      end
      if expire_at ~= '0' then
        redis.call('EXPIREAT', key, expire_at)
      end
      i = i + 5
    end
  else
    i = i + 5 * nops
  end
  for _ = 1, nchecks do
    local award_id, field, badge, tier, nconds = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4])
    i = i + 5
    local met = fresh and redis.call('HEXISTS', badges_key, field) == 0
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
        member_id = member, badge = badge, tier = tier, at_ms = tonumber(at_ms), evidence = event_id,
      }))
      redis.call('ZADD', by_time, at_ms, award_id)
      redis.call('ZADD', outbox, at_ms, award_id)
      fired[#fired + 1] = award_id
    end
  end
  flags[#flags + 1] = fresh and 1 or 0
end
return {flags, fired}
