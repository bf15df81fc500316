-- Apply a batch of planned activity effects for ONE community, atomically.
-- KEYS[1]: a key in the community's hash slot (routes the call on Redis Cluster).
-- ARGV[1]: seconds to remember an event_id.
-- Then, per event: seen-key, op count N, then N ops of 5 args (op, key, field, amount,
-- expire_at). An event's ops run only when SET NX on its seen-key succeeds, so a
-- redelivered event changes nothing. Returns one integer per event: 1 applied, 0 duplicate.
local ttl = tonumber(ARGV[1])
local i = 2
local n = #ARGV
local out = {}
while i <= n do
  local seen = ARGV[i]
  local nops = tonumber(ARGV[i + 1])
  i = i + 2
  if redis.call('SET', seen, '1', 'NX', 'EX', ttl) then
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
    out[#out + 1] = 1
  else
    i = i + 5 * nops
    out[#out + 1] = 0
  end
end
return out
