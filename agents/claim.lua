-- Claim input partitions for a new owner in ONE community, and read what is recorded.
-- KEYS[1]: the community's offsets hash. ARGV: field, epoch, field, epoch, ...
-- A stored epoch older than the claimant's is replaced (its offset and stream time
-- kept); from then on the older owner's writes are refused (write_batch.lua).
-- Returns, per field, the stored "epoch offset stream_ms" after the claim.
local out = {}
for i = 1, #ARGV, 2 do
  local stored = redis.call('HGET', KEYS[1], ARGV[i])
  local epoch, rest = -1, '-1 0'
  if stored then
    epoch = tonumber(string.match(stored, '^(%d+)'))
    rest = string.match(stored, '^%d+ (.*)$')
  end
  if epoch < tonumber(ARGV[i + 1]) then
    stored = ARGV[i + 1] .. ' ' .. rest
    redis.call('HSET', KEYS[1], ARGV[i], stored)
  end
  out[#out + 1] = stored
end
return out
