-- wrk script: every request retries another (concept, content type) pair.
-- Set by the benchmark through the environment:
--   RETRY_TARGETS  "token roadmap_id concepts;token roadmap_id concepts;..."
--   RETRY_DELAY_MS per-connection pause between requests (pacing), 0 = saturate
local types = {"tutorial", "resources", "quiz"}
local targets = {}
for spec in string.gmatch(os.getenv("RETRY_TARGETS"), "[^;]+") do
  local token, roadmap, concepts = string.match(spec, "(%S+) (%S+) (%d+)")
  table.insert(targets, {token = token, roadmap = roadmap, pairs = tonumber(concepts) * 3})
end
local delay_ms = tonumber(os.getenv("RETRY_DELAY_MS") or "0")
local thread_count = tonumber(os.getenv("RETRY_THREADS") or "1")
local threads = 0

function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

function init(args)
  counter = 0
  math.randomseed(os.time() + id)
end

-- Exponentially distributed pauses (mean RETRY_DELAY_MS): the connections send
-- independently, like users, instead of in lock-step bursts.
function delay()
  if delay_ms == 0 then
    return 0
  end
  return -math.log(1 - math.random()) * delay_ms
end

function request()
  -- The threads interleave over every target's pairs, so no pair is retried twice
  -- within a run of fewer requests than there are pairs.
  local n = counter * thread_count + id
  counter = counter + 1
  local target = targets[(n % #targets) + 1]
  local pair = math.floor(n / #targets) % target.pairs
  local concept = string.format("c%03d", math.floor(pair / 3) + 1)
  local path = "/api/v1/roadmaps/" .. target.roadmap .. "/concepts/" .. concept .. "/"
    .. types[(pair % 3) + 1] .. "/retry"
  return wrk.format("POST", path, {["Authorization"] = "Token " .. target.token})
end
