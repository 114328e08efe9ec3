// The demo editor's presence: the other participants' carets and selections drawn over the textarea in
// their colour with their name, the list of who is in the document, and this page's own selection sent
// as it moves (the client coalesces nothing itself: the server keeps the latest of a burst, PROTOCOL.md
// "Presence").
//
// A textarea cannot style parts of its text, so the carets are drawn in a "mirror": a div behind-the-
// scenes copy of the textarea with the same font, padding, width and wrapping, holding the text up to a
// position followed by a marker span; the marker's offset is where that character sits in the textarea.
// The overlay sits exactly over the textarea and scrolls with it.

import { codePointToUtf16, utf16ToCodePoint } from '/tandem-client.js';

// The CSS properties that decide where text wraps and lines fall, copied from the textarea to the mirror.
const MIRRORED = [
  'boxSizing', 'width', 'paddingTop', 'paddingRight', 'paddingBottom', 'paddingLeft',
  'borderTopWidth', 'borderRightWidth', 'borderBottomWidth', 'borderLeftWidth', 'borderStyle',
  'fontFamily', 'fontSize', 'fontWeight', 'fontStyle', 'lineHeight', 'letterSpacing', 'tabSize',
  'textTransform', 'wordSpacing', 'textIndent',
];

const PALETTE = ['#d1495b', '#00798c', '#edae49', '#66a182', '#8d6a9f', '#2e4057', '#e07a5f', '#3d5a80'];

/**
 * This page's display fields, without asking: the signed-in user's name (without authentication
 * everyone is `anonymous`: then "guest-" and the start of the session id), and a colour picked by the
 * session id (a reloaded page takes its session over, so it keeps its colour), skipping the colours in
 * `taken` while the palette has others.
 */
export function ownDisplay(user, clientId, taken = new Set()) {
  let hash = 0;
  for (const ch of clientId || '') hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  let colour = PALETTE[hash % PALETTE.length];
  for (let i = 1; taken.has(colour) && i < PALETTE.length; i++) colour = PALETTE[(hash + i) % PALETTE.length];
  const name = (user && user !== 'anonymous' ? user : `guest-${(clientId || '').slice(0, 4) || 'anon'}`).slice(0, 64);
  return { name, colour };
}

/**
 * Wires the overlay, the participant list and the own-selection announcements for `editor` and `handle`.
 * `client` is the TandemClient (its user and ids name this page). Returns `{ redraw(), announce() }`,
 * for when the text or the status changed.
 */
export function setupPresence({ editor, handle, client }) {
  // Two people in one colour cannot be told apart: a page yields its colour to the participants whose
  // id sorts before its own (so of two pages that picked one colour, exactly one moves on).
  const display = () => {
    const me = client.author ?? '';
    const taken = new Set(handle.presences().filter((p) => p.client < me && p.colour).map((p) => p.colour));
    return ownDisplay(client.user, client.clientId, taken);
  };
  const overlay = document.getElementById('carets');
  const list = document.getElementById('people');
  const mirror = document.createElement('div');
  mirror.setAttribute('aria-hidden', 'true');
  Object.assign(mirror.style, {
    position: 'absolute', visibility: 'hidden', top: '0', left: '-9999px',
    whiteSpace: 'pre-wrap', overflowWrap: 'break-word', wordWrap: 'break-word', overflow: 'hidden',
  });
  document.body.appendChild(mirror);

  /** Where code point `index` of the textarea's text is: {left, top, height} relative to the textarea's box. */
  function coordinates(index) {
    const style = getComputedStyle(editor);
    for (const p of MIRRORED) mirror.style[p] = style[p];
    // The textarea's content box is narrower by its scrollbar.
    mirror.style.width = `${editor.clientWidth + parseFloat(style.borderLeftWidth) + parseFloat(style.borderRightWidth)}px`;
    mirror.style.boxSizing = 'border-box';
    const text = editor.value;
    mirror.textContent = text.slice(0, codePointToUtf16(text, index));
    const marker = document.createElement('span');
    // A zero-width character after the position keeps a marker at the end of a line on that line.
    marker.textContent = text.slice(codePointToUtf16(text, index)) ? text[codePointToUtf16(text, index)] : '\u200b';
    mirror.appendChild(marker);
    const lineHeight = parseFloat(style.lineHeight) || parseFloat(style.fontSize) * 1.2;
    return { left: marker.offsetLeft, top: marker.offsetTop, height: lineHeight };
  }

  function place() {
    // The overlay covers the textarea exactly, wherever the layout put it.
    overlay.style.left = `${editor.offsetLeft}px`;
    overlay.style.top = `${editor.offsetTop}px`;
    overlay.style.width = `${editor.offsetWidth}px`;
    overlay.style.height = `${editor.offsetHeight}px`;
    overlay.hidden = editor.hidden;
  }

  function redraw() {
    place();
    overlay.replaceChildren();
    const people = handle.presences();
    const len = Array.from(editor.value).length;
    for (const p of people) {
      if (p.head === undefined) continue;
      const colour = p.colour || '#888';
      const [from, to] = [Math.min(p.anchor, p.head), Math.max(p.anchor, p.head)].map((i) => Math.min(i, len));
      // The selection: one box per character (short documents; keeps wrapped lines right).
      for (let i = from; i < to; i++) {
        const at = coordinates(i);
        const next = coordinates(i + 1);
        const box = document.createElement('div');
        box.className = 'remote-selection';
        const width = next.top === at.top ? next.left - at.left : 8;
        Object.assign(box.style, {
          left: `${at.left}px`, top: `${at.top - editor.scrollTop}px`, width: `${Math.max(width, 2)}px`,
          height: `${at.height}px`, background: colour,
        });
        overlay.appendChild(box);
      }
      const at = coordinates(Math.min(p.head, len));
      const caret = document.createElement('div');
      caret.className = 'remote-caret';
      caret.dataset.client = p.client;
      caret.dataset.index = String(Math.min(p.head, len));
      Object.assign(caret.style, {
        left: `${at.left - editor.scrollLeft}px`, top: `${at.top - editor.scrollTop}px`,
        height: `${at.height}px`, borderColor: colour,
      });
      const label = document.createElement('span');
      label.className = 'remote-name';
      label.textContent = p.name || p.user;
      label.style.background = colour;
      caret.appendChild(label);
      overlay.appendChild(caret);
    }
    // Who is here: this page first, then the others.
    const own = display();
    const items = [{ name: `${own.name} (you)`, colour: own.colour }, ...people.map((p) => ({ name: p.name || p.user, colour: p.colour || '#888', client: p.client }))];
    list.replaceChildren(
      ...items.map(({ name, colour, client }) => {
        const li = document.createElement('li');
        li.textContent = name;
        li.style.setProperty('--colour', colour);
        if (client) li.dataset.client = client;
        return li;
      }),
    );
  }

  // This page's selection, sent whenever it moved (the server rate-limits and coalesces bursts). A page
  // whose textarea was never focused has no caret to show: it is present without a selection. Remote
  // edits move the client's copy of the selection exactly as they move the textarea's, so they cause
  // no message; the server moves the announced selection through them too.
  let touched = false;
  let sent = null;
  function announce() {
    if (!handle.state || handle.phase === 'closed' || handle.phase === 'failed') return;
    const text = editor.value;
    if (text !== handle.text) return; // the textarea is ahead of the client (an input event follows)
    const own = display();
    let selection = null;
    if (touched) {
      const backward = editor.selectionDirection === 'backward';
      selection = {
        anchor: utf16ToCodePoint(text, backward ? editor.selectionEnd : editor.selectionStart),
        head: utf16ToCodePoint(text, backward ? editor.selectionStart : editor.selectionEnd),
      };
    }
    const current = handle.selection;
    const same = selection === null ? current === null : current?.anchor === selection.anchor && current?.head === selection.head;
    if (same && sent?.name === own.name && sent?.colour === own.colour) return;
    sent = own;
    if (selection) handle.setSelection(selection.anchor, selection.head, own);
    else handle.setSelection(null, undefined, own);
  }
  editor.addEventListener('focus', () => {
    touched = true;
    announce();
  });
  for (const event of ['select', 'keyup', 'mouseup', 'input']) editor.addEventListener(event, announce);
  document.addEventListener('selectionchange', () => {
    if (document.activeElement === editor) announce();
  });
  editor.addEventListener('scroll', redraw);
  window.addEventListener('resize', redraw);
  new ResizeObserver(redraw).observe(editor);

  return { redraw, announce };
}
