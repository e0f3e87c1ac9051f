-- Argo CD health of a videoqueue.dev VideoQueue. Until the operator has observed the current
-- generation: Progressing. Stalled -> Degraded, Reconciling -> Progressing (the kstatus
-- conditions); a Paused or Draining queue -> Suspended (a choice, not a fault); health
-- Critical or Offline -> Degraded; otherwise Ready decides (Warning stays Healthy, with why).
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

local function reasons(status)
  if status.healthReasons == nil then
    return ""
  end
  return table.concat(status.healthReasons, "; ")
end

local status = obj.status
if status == nil or status.observedGeneration == nil then
  return hs
end
if obj.metadata.generation ~= nil and status.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end

if holds(status, "Stalled") then
  hs.status = "Degraded"
  hs.message = condition(status, "Stalled").message or "Stalled"
  return hs
end
if holds(status, "Reconciling") then
  hs.message = condition(status, "Reconciling").message or "Reconciling"
  return hs
end

local state = "Active"
if obj.spec ~= nil and obj.spec.state ~= nil then
  state = obj.spec.state
end
if state == "Paused" or state == "Draining" then
  hs.status = "Suspended"
  local ready = condition(status, "Ready")
  hs.message = (ready ~= nil and ready.message) or ("Queue is " .. state)
  if state == "Draining" and holds(status, "Drained") then
    hs.message = "Drained: nothing admitted or running. " .. hs.message
  end
  return hs
end

if status.health == "Critical" or status.health == "Offline" then
  hs.status = "Degraded"
  hs.message = status.health .. ": " .. reasons(status)
  return hs
end

local ready = condition(status, "Ready")
if ready == nil then
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  if status.health == "Warning" then
    hs.message = "Warning: " .. reasons(status)
  end
  return hs
end
hs.message = ready.message or ready.reason or "Not ready"
return hs
