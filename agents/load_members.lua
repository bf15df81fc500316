-- Read members' engine state in ONE community, in one call (the worker's first touch
-- of a batch's new members).
-- KEYS: per member, its profile hash, then its event-id keys of ARGV[1] days.
-- ARGV[1]: the number of days; ARGV[2]: the profile field that holds the state.
-- Returns, per member: state, first_seen, then one value per day (nil when absent).
local days, field = tonumber(ARGV[1]), ARGV[2]
local out, n = {}, 0
for i = 1, #KEYS, days + 1 do
  local profile = redis.call('HMGET', KEYS[i], field, 'first_seen')
  out[n + 1], out[n + 2] = profile[1], profile[2]
  n = n + 2
  if days > 0 then
    local ids = redis.call('MGET', unpack(KEYS, i + 1, i + days))
    for d = 1, days do out[n + d] = ids[d] end
    n = n + days
  end
end
return out
