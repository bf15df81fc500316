-- Read members' engine state in ONE community, in one call (the worker's first touch
-- of a batch's new members).
-- KEYS: per member, its profile hash.
-- ARGV[1]: the profile field that holds the state; ARGV[2..]: the UTC days whose
-- event-id keys (<profile>:ids:<day>, same slot) are read, for members with a state
-- only: a member without one is new (its ids are written with its state, atomically),
-- and most members a batch loads are new.
-- Returns, per member: state, first_seen, then one value per day (nil when absent).
local field, days = ARGV[1], #ARGV - 1
local out, n = {}, 0
for i = 1, #KEYS do
  local profile = redis.call('HMGET', KEYS[i], field, 'first_seen')
  out[n + 1], out[n + 2] = profile[1], profile[2]
  n = n + 2
  if days > 0 then
    if profile[1] then
      local names = {}
      for d = 1, days do names[d] = KEYS[i] .. ':ids:' .. ARGV[d + 1] end
      local ids = redis.call('MGET', unpack(names))
      for d = 1, days do out[n + d] = ids[d] end
    else
      for d = 1, days do out[n + d] = false end
    end
    n = n + days
  end
end
return out
