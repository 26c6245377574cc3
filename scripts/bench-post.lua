-- POSTs a JSON order of a fixed size to the bench server, with an Idempotency-Key chosen by mode.
--
--   wrk -s scripts/bench-post.lua URL -- MODE BODY_BYTES RUN_ID
--
-- MODE: none   no key (the request runs unprotected)
--       unique a new key for every request (every request executes and is stored)
--       same   one key for every request (the first executes, the rest are replays)
-- RUN_ID prefixes every key, so keys of earlier runs against the same server never collide.

local mode, body, key_prefix, prepared
local sent = 0

function setup(thread)
  thread_index = (thread_index or 0) + 1
  thread:set("thread_id", thread_index)
end

function init(args)
  mode = args[1] or "none"
  local size = tonumber(args[2] or "1024")
  local run_id = args[3] or tostring(os.time())
  local head, tail = '{"item":"widget","quantity":3,"note":"', '"}'
  body = head .. string.rep("x", math.max(0, size - #head - #tail)) .. tail
  key_prefix = run_id .. "-" .. tostring(thread_id or 1) .. "-"
  local headers = { ["Content-Type"] = "application/json" }
  if mode == "same" then
    headers["Idempotency-Key"] = run_id .. "-same"
  elseif mode ~= "none" and mode ~= "unique" then
    error("mode must be none, unique or same, not " .. mode)
  end
  prepared = wrk.format("POST", nil, headers, body)
end

function request()
  if mode ~= "unique" then
    return prepared
  end
  sent = sent + 1
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = key_prefix .. sent,
  }, body)
end
