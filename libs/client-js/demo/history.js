// The demo editor's history view: a slider over versions 0..latest that shows the document,
// read-only, at the chosen version (GET /v1/docs/{doc}/versions/{v}, services/gateway
// history_http.rs), the document's checkpoints as marks on the slider and as buttons that jump to
// their version, and the way back to live editing.
//
// It only reads. The live editor stays connected underneath, hidden: other users' edits keep
// arriving in it, and this page's own pending edits keep going out, so looking at the past never
// disturbs anyone's editing, this page's included.

const DEBOUNCE_MS = 150;

/**
 * Wires the history controls of index.html. `liveVersion()` is the live document's version.
 * Returns `{ update(version) }`, to call when the live version moves (the slider's end follows).
 */
export function setupHistory({ docId, editor, liveVersion }) {
  const $ = (id) => document.getElementById(id);
  const panel = $('history');
  const toggle = $('history-toggle');
  const slider = $('history-slider');
  const label = $('history-label');
  const marks = $('history-marks');
  const checkpointList = $('history-checkpoints');
  const past = $('past');
  const base = `/v1/docs/${encodeURIComponent(docId)}`;

  let open = false;
  let timer = null;
  // Only the answer to the latest request is shown: a slow answer for an older slider position
  // must not replace a newer one.
  let latestRequest = 0;

  async function getJson(path) {
    const response = await fetch(base + path, { cache: 'no-store', credentials: 'same-origin' });
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new Error(body?.message ?? `HTTP ${response.status}`);
    return body;
  }

  function setMax(version) {
    if (version > Number(slider.max)) slider.max = String(version);
  }

  async function show(version) {
    const request = ++latestRequest;
    delete past.dataset.version; // tests wait for it: set only once the text shown is this version's
    label.textContent = `loading version ${version}…`;
    try {
      const answer = await getJson(`/versions/${version}`);
      if (request !== latestRequest || !open) return;
      past.value = answer.text;
      past.dataset.version = String(answer.version);
      setMax(answer.latest_version);
      label.textContent = `version ${answer.version} of ${answer.latest_version} · read-only`;
    } catch (err) {
      if (request === latestRequest) label.textContent = `cannot show version ${version}: ${err.message}`;
    }
  }

  function jump(version) {
    clearTimeout(timer);
    setMax(version);
    slider.value = String(version);
    show(version);
  }

  async function loadCheckpoints() {
    marks.replaceChildren();
    checkpointList.replaceChildren();
    let checkpoints;
    try {
      ({ checkpoints } = await getJson('/checkpoints'));
    } catch (err) {
      checkpointList.textContent = `checkpoints unavailable: ${err.message}`;
      return;
    }
    if (checkpoints.length === 0) {
      checkpointList.textContent = 'no checkpoints';
      return;
    }
    for (const checkpoint of checkpoints) {
      const mark = document.createElement('option');
      mark.value = String(checkpoint.version);
      mark.label = checkpoint.name;
      marks.append(mark);
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'checkpoint';
      button.dataset.version = String(checkpoint.version);
      button.textContent = `${checkpoint.name} · v${checkpoint.version}`;
      const when = checkpoint.created_at_ms ? new Date(checkpoint.created_at_ms).toLocaleString() : '';
      button.title = `version ${checkpoint.version}, named by ${checkpoint.author || 'unknown'} ${when}`.trim();
      button.addEventListener('click', () => jump(checkpoint.version));
      checkpointList.append(button);
    }
  }

  function openHistory() {
    open = true;
    document.body.classList.add('history-open');
    panel.hidden = false;
    past.hidden = false;
    editor.hidden = true;
    toggle.textContent = 'Back to live';
    slider.max = String(liveVersion());
    jump(liveVersion());
    loadCheckpoints();
    slider.focus();
  }

  function backToLive() {
    open = false;
    document.body.classList.remove('history-open');
    latestRequest++;
    clearTimeout(timer);
    panel.hidden = true;
    past.hidden = true;
    delete past.dataset.version;
    editor.hidden = false;
    toggle.textContent = 'History';
    editor.focus();
  }

  toggle.addEventListener('click', () => (open ? backToLive() : openHistory()));
  $('history-live').addEventListener('click', backToLive);
  slider.addEventListener('input', () => {
    label.textContent = `version ${slider.value}…`;
    clearTimeout(timer);
    timer = setTimeout(() => show(Number(slider.value)), DEBOUNCE_MS);
  });
  past.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') backToLive();
  });

  return {
    update(version) {
      if (open) setMax(version);
    },
  };
}
