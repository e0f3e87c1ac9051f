-- Argo CD health of a videoqueue.dev VideoJob, read from its conditions (the phase is only a
-- summary for people). Complete -> Healthy; Failed, Rejected or Cancelled -> Degraded;
-- spec.suspend -> Suspended; anything else (queued, waiting, running, retrying) -> Progressing.
local hs = {status = "Progressing", message = "Waiting for the videoqueue operator"}

local function condition(status, type)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function holds(status, type)
  local c = condition(status, type)
  return c ~= nil and c.status == "True"
end

local function say(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil or status.observedGeneration == nil then
  return hs
end
if obj.metadata.generation ~= nil and status.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end

if holds(status, "Complete") then
  hs.status = "Healthy"
  hs.message = say(condition(status, "Complete"), "Job succeeded")
  return hs
end
for _, type in ipairs({"Rejected", "Cancelled", "Failed"}) do
  if holds(status, type) then
    hs.status = "Degraded"
    hs.message = type .. ": " .. say(condition(status, type), status.message or "")
    return hs
  end
end
if holds(status, "Suspended") then
  hs.status = "Suspended"
  hs.message = say(condition(status, "Suspended"), "Job is suspended (spec.suspend)")
  return hs
end

local phase = status.phase or "Pending"
hs.message = phase
if status.attempt ~= nil and status.attempt > 0 then
  hs.message = hs.message .. " (attempt " .. status.attempt .. ")"
end
if holds(status, "QueueMissing") then
  hs.message = hs.message .. ": " .. say(condition(status, "QueueMissing"), "queue missing")
elseif status.message ~= nil and status.message ~= "" then
  hs.message = hs.message .. ": " .. status.message
end
return hs
