// The demo page's service worker: lets the page load with no network, so that a page reloaded while
// offline still shows the document and its edits waiting (kept by the client in localStorage) and sends
// them once the connection is back.
//
// Network first, the cache only as a fallback: online, the page and scripts always come from the server
// (they must match its protocol after an upgrade); each answer refreshes the cached copy. The page's
// files are cached at install, so even the very first load (not controlled yet) leaves them cached, and
// clients.claim() takes over that first page at once. Everything else (the WebSocket, /v1/ API calls,
// the sign-in) goes past this worker untouched.

const CACHE = 'tandem-demo-v1';
// Paths the demo page loads (services/gateway/src/demo.rs serves them).
const ASSETS = ['/', '/tandem-client.js', '/ot.js', '/offline.js', '/presence.js', '/history.js', '/presence-view.js'];

self.addEventListener('install', (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(ASSETS.map((path) => new Request(path, { cache: 'reload' }))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(self.clients.claim());
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin || !ASSETS.includes(url.pathname)) return;
  // The page is cached once, whatever its ?doc=: the document comes from the client's storage.
  const key = url.pathname;
  event.respondWith(
    fetch(request)
      .then(async (response) => {
        if (response.ok) {
          const cache = await caches.open(CACHE);
          await cache.put(key, response.clone());
        }
        return response;
      })
      .catch(async () => {
        const cached = await caches.match(key);
        if (cached) return cached;
        throw new Error(`offline and ${key} is not cached`);
      }),
  );
});
