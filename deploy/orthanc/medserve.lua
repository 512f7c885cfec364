-- medserve trigger for Orthanc (tested with Orthanc 1.10, Lua 5.3).
--
-- When a study becomes stable (no new instance for "StableAge" seconds), ask medserve to analyse
-- it: POST {MEDSERVE_URL}/studies/{StudyInstanceUID}/analyze with the header X-API-Key. medserve
-- answers at once (202 new job, 200 existing job) and pulls the study itself over DICOMweb.
--
-- Environment of the Orthanc process:
--   MEDSERVE_URL      medserve's base URL, e.g. http://medserve:8000 (no trailing /studies)
--   MEDSERVE_API_KEY  one of medserve's MEDSERVE_API_KEYS (e.g. the one named "orthanc")
--
-- Loop guard: medserve stores its results (DICOM SEG / SR, Manufacturer "medserve") into the
-- same study, which makes the study change and become stable again. A study is skipped when its
-- most recently updated series are medserve's: precisely, when the newest "LastUpdate" among the
-- series whose Manufacturer is "medserve" is later than the newest "LastUpdate" among all other
-- series. A study with no medserve series, or with a series from a modality updated at the same
-- time as or after medserve's last result, is sent (medserve's own idempotence answers a study
-- it already analysed with the existing job and stores nothing twice).
--
-- Nothing about the patient or the study (no UID, no Orthanc id, no tag value) is logged.
--
-- At load, the script stops Orthanc from starting when authentication is on and a registered
-- user has an empty password: that is what an unset ${ORTHANC_MEDSERVE_PASSWORD} in
-- orthanc.json becomes, and Orthanc would accept any client as that user.
--
-- To combine with an OnStableStudy of your own: list this script first in "LuaScripts" and call
-- MedserveOnStableStudy(studyId, tags, metadata) from your OnStableStudy.

local MEDSERVE_MANUFACTURER = 'medserve'

local function log(message)
  print('medserve: ' .. message)
end

-- Lua error texts can quote a REST path: blank out Orthanc ids and DICOM UIDs before logging.
local function scrub(text)
  text = tostring(text)
  text = string.gsub(text, '%x+%-%x+%-%x+%-%x+%-%x+', '<id>')
  text = string.gsub(text, '%d+%.[%d%.]+', '<uid>')
  return text
end

local function trim(s)
  return (string.gsub(s, '^%s*(.-)%s*$', '%1'))
end

local function getJson(uri)
  local answer = RestApiGet(uri)
  if answer == nil or answer == '' then
    error('GET ' .. uri .. ' gave no answer')
  end
  return ParseJson(answer)
end

-- Manufacturer is one of Orthanc's main DICOM tags of a series (1.10 and later), so the series
-- listing carries it; where it does not, read it from the series' first instance.
local function seriesManufacturer(series)
  local tags = series['MainDicomTags'] or {}
  local manufacturer = tags['Manufacturer']
  if manufacturer == nil then
    local instances = getJson('/series/' .. series['ID'] .. '/instances')
    if instances[1] ~= nil then
      manufacturer = getJson('/instances/' .. instances[1]['ID'] .. '/simplified-tags')['Manufacturer']
    end
  end
  if type(manufacturer) ~= 'string' then
    return ''
  end
  return string.lower(trim(manufacturer))
end

-- True when the study's most recently updated series are all medserve's (see the header).
-- "LastUpdate" is Orthanc's time stamp YYYYMMDDTHHMMSS: strings compare as times.
local function newestSeriesAreMedserve(studyId)
  local newestOurs, newestOthers = '', ''
  for _, series in ipairs(getJson('/studies/' .. studyId .. '/series')) do
    local updated = series['LastUpdate'] or ''
    if seriesManufacturer(series) == MEDSERVE_MANUFACTURER then
      if updated > newestOurs then newestOurs = updated end
    else
      if updated > newestOthers then newestOthers = updated end
    end
  end
  return newestOurs ~= '' and newestOurs > newestOthers
end

local function analyze(studyId, tags)
  local url = os.getenv('MEDSERVE_URL')
  local key = os.getenv('MEDSERVE_API_KEY')
  if url == nil or url == '' then
    log('MEDSERVE_URL is not set: no analysis requested')
    return
  end
  url = string.gsub(url, '/+$', '')

  local uid = tags and tags['StudyInstanceUID']
  if type(uid) ~= 'string' or not string.match(uid, '^[0-9][0-9.]*$') or #uid > 64 then
    log('study without a valid StudyInstanceUID: skipped')
    return
  end

  if newestSeriesAreMedserve(studyId) then
    log('skipped a study whose newest series are medserve results')
    return
  end

  local headers = {}
  if key ~= nil and key ~= '' then
    headers['X-API-Key'] = key
  else
    log('MEDSERVE_API_KEY is not set: calling medserve without a key')
  end
  -- HttpPost returns nil when the request fails (no connection, timeout "HttpTimeout",
  -- or an HTTP error status); the answer body otherwise.
  local answer = HttpPost(url .. '/studies/' .. uid .. '/analyze', '', headers)
  if answer == nil then
    log('analysis request failed (medserve unreachable or refused it); '
      .. 'analyse the study again from medserve or re-send it')
  else
    log('analysis requested')
  end
end

-- Checks at load (an error here stops Orthanc's start, on purpose).
do
  local configuration = GetOrthancConfiguration()
  if configuration['AuthenticationEnabled'] ~= false then
    for user, password in pairs(configuration['RegisteredUsers'] or {}) do
      if password == '' then
        error('medserve.lua: the Orthanc user "' .. user .. '" has an empty password '
          .. '(an unset environment variable such as ORTHANC_MEDSERVE_PASSWORD?); '
          .. 'Orthanc is not started')
      end
    end
  end
  if os.getenv('MEDSERVE_URL') == nil or os.getenv('MEDSERVE_URL') == '' then
    log('MEDSERVE_URL is not set: stable studies will not be sent for analysis')
  end
end

function MedserveOnStableStudy(studyId, tags, metadata)
  local ok, err = pcall(analyze, studyId, tags)
  if not ok then
    log('error, no analysis requested: ' .. scrub(err))
  end
end

function OnStableStudy(studyId, tags, metadata)
  MedserveOnStableStudy(studyId, tags, metadata)
end
