// Satchel's self-service page: a client of the UForge face's JSON under /api.
//
// The credentials live in this closure only (never in storage or cookies) and go as HTTP Basic on
// each fetch. Downloads never pass through this script: it asks for a one-time download id and
// hands the URL to the browser, which streams the archive to disk (archives can be many GiB).
'use strict';

(() => {
  const state = { login: null, password: null, uid: null, polls: new Map(), generation: 0 };
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ HTTP

  class ApiError extends Error {
    constructor(status, message, retryAfter) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  // btoa takes Latin-1 only: encode the pair as UTF-8 bytes first (what the server decodes).
  function basic(login, password) {
    let bin = '';
    for (const b of new TextEncoder().encode(login + ':' + password)) bin += String.fromCharCode(b);
    return 'Basic ' + btoa(bin);
  }

  async function api(method, path, extra = {}, payload = undefined) {
    const headers = Object.assign(
      { Accept: 'application/json', Authorization: basic(state.login, state.password) },
      extra,
    );
    let r;
    try {
      // credentials 'omit': no cookies, and a 401 comes back to this script instead of the
      // browser's own password dialog.
      r = await fetch('/api/' + path, { method, headers, body: payload, credentials: 'omit', cache: 'no-store' });
    } catch (e) {
      throw new ApiError(0, 'The server could not be reached. Check your connection and try again.');
    }
    if (r.status === 304 || r.status === 204) return { status: r.status, headers: r.headers, body: null };
    const text = await r.text();
    let body = null;
    if (text) {
      try { body = JSON.parse(text); } catch (e) { body = null; }
    }
    if (!r.ok) {
      const m = body && body.localizedErrorMsg && body.localizedErrorMsg.message;
      throw new ApiError(r.status, m || 'The server answered ' + r.status + '.', r.headers.get('Retry-After'));
    }
    return { status: r.status, headers: r.headers, body };
  }

  // ------------------------------------------------------------------ DOM helpers

  // Builds elements from data without ever parsing it as HTML.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') e.textContent = v;
      else if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function items(doc, outer, inner) {
    return (doc && doc[outer] && doc[outer][inner]) || [];
  }

  function bytes(n) {
    if (typeof n !== 'number' || !(n >= 0)) return '';
    const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + ' ' + units[i];
  }

  function announce(text, isError) {
    const s = $('status');
    s.textContent = text;
    s.classList.toggle('error', !!isError);
  }

  function showError(id, text) {
    const e = $(id);
    e.textContent = text || '';
    e.hidden = !text;
  }

  function fill(list, nodes, emptyText) {
    list.dataset.empty = emptyText;
    list.replaceChildren(...(nodes.length ? nodes : [el('li', { class: 'empty', text: emptyText })]));
  }

  function failed(list, what, err) {
    list.replaceChildren(el('li', { class: 'error', text: 'Could not load ' + what + ': ' + err.message }));
  }

  // ------------------------------------------------------------------ log in / out

  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const login = $('login').value.trim();
    const password = $('password').value;
    if (!login || !password) {
      showError('login-error', 'Enter your login and your password.');
      (login ? $('password') : $('login')).focus();
      return;
    }
    showError('login-error', '');
    const button = $('login-submit');
    button.disabled = true;
    state.login = login;
    state.password = password;
    try {
      const r = await api('GET', 'users/' + encodeURIComponent(login));
      state.uid = (r.body && r.body.loginName) || login;
    } catch (e) {
      state.login = state.password = null;
      let m = e.message;
      if (e.status === 401) m = 'Wrong login or password. Check both and try again.';
      else if (e.status === 429) m = 'Too many attempts. Wait ' + (e.retryAfter || 'a few') + ' seconds, then try again.';
      showError('login-error', m);
      $('password').select();
      $('password').focus();
      return;
    } finally {
      button.disabled = false;
    }
    $('password').value = '';
    $('who').textContent = state.uid;
    $('login-view').hidden = true;
    $('session').hidden = false;
    $('app-view').hidden = false;
    announce('Logged in. Loading your things…');
    $('main').focus();
    await loadAll();
    announce('Logged in as ' + state.uid + '.');
  });

  $('logout').addEventListener('click', () => {
    state.login = state.password = state.uid = null;
    state.generation++;
    for (const t of state.polls.values()) clearTimeout(t);
    state.polls.clear();
    for (const id of ['takeouts', 'exports', 'bundles', 'appliances', 'images', 'accounts']) $(id).replaceChildren();
    $('app-view').hidden = true;
    $('session').hidden = true;
    $('login-view').hidden = false;
    announce('');
    $('login').focus();
  });

  async function loadAll() {
    // Images list the templates of each bundle, so they wait for the bundle list.
    bundlesReady = loadBundles();
    await Promise.allSettled([loadTakeouts(), loadExports(), bundlesReady, loadAppliances(), loadImages(), loadAccounts()]);
  }

  const user = () => 'users/' + encodeURIComponent(state.uid);

  // ------------------------------------------------------------------ tickets (exports, takeouts)

  // One list entry per ticket: its progress while it runs, Download once complete, Delete always.
  function ticketItem(t, name, meta) {
    const li = el('li', { 'data-uri': t.uri });
    const label = el('span', { class: 'name', text: name });
    const pct = el('span', { class: 'pct', 'aria-hidden': 'true' });
    const bar = el('progress', { max: '100', 'aria-label': 'Progress of ' + name });
    const message = el('span', { class: 'meta' });
    const actions = el('div', { class: 'actions' });
    li.append(
      el('div', { class: 'what' }, label, meta ? el('span', { class: 'meta', text: meta }) : null, message),
      el('div', { class: 'progress' }, bar, pct),
      actions,
    );
    const show = (s) => {
      const p = Math.max(0, Math.min(100, s.percentage || 0));
      bar.value = p;
      pct.textContent = p + ' %';
      const text = s.error ? (s.errorMessage || s.message || 'failed') : (s.message || '');
      message.textContent = text;
      message.classList.toggle('error', !!s.error);
      li.dataset.state = s.complete ? 'complete' : s.error ? 'error' : s.cancelled ? 'cancelled' : 'running';
      const buttons = [];
      if (s.complete) {
        buttons.push(el('button', { type: 'button', 'aria-label': 'Download ' + name, text: 'Download', onclick: (e) => downloadTicket(t, name, e.currentTarget) }));
      }
      buttons.push(el('button', { type: 'button', class: 'danger', 'aria-label': 'Delete ' + name, text: 'Delete', onclick: (e) => deleteTicket(t, name, li, e.currentTarget) }));
      // Replace the buttons only when the set changes, so keyboard focus stays where it is.
      const key = buttons.map((b) => b.textContent).join();
      if (actions.dataset.key !== key) {
        actions.dataset.key = key;
        actions.replaceChildren(...buttons);
      }
    };
    show(t.status || {});
    const s = t.status || {};
    if (!s.complete && !s.error && !s.cancelled && s.uri) watch(s.uri, show, name);
    return li;
  }

  // Polls a status with If-None-Match: an unchanged status costs a 304 and no body.
  function watch(statusUri, show, name) {
    if (state.polls.has(statusUri)) return;
    const generation = state.generation;
    let etag = null;
    const tick = async () => {
      if (generation !== state.generation) return;
      try {
        const r = await api('GET', statusUri, etag ? { 'If-None-Match': etag } : {});
        if (r.status === 200 && r.body) {
          etag = r.headers.get('ETag');
          show(r.body);
          if (r.body.complete || r.body.error || r.body.cancelled) {
            state.polls.delete(statusUri);
            announce(name + (r.body.complete ? ' is ready to download.' : ': ' + (r.body.errorMessage || r.body.message || 'stopped') + '.'), !r.body.complete);
            return;
          }
        }
      } catch (e) {
        if (e.status === 404) { state.polls.delete(statusUri); return; }
      }
      if (generation === state.generation) state.polls.set(statusUri, setTimeout(tick, 1000));
    };
    state.polls.set(statusUri, setTimeout(tick, 300));
  }

  // The archive goes straight from the server to the disk: a plain link with a one-time id.
  async function downloadTicket(t, name, button) {
    button.disabled = true;
    try {
      const r = await api('POST', t.uri + '/downloadids');
      startDownload(r.body.uri);
      announce('Download of ' + name + ' started.');
    } catch (e) {
      announce('Could not download ' + name + ': ' + e.message, true);
    } finally {
      button.disabled = false;
    }
  }

  function startDownload(uri) {
    const a = el('a', { href: '/api/' + uri, download: '', hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
  }

  async function deleteTicket(t, name, li, button) {
    button.disabled = true;
    try {
      await api('DELETE', t.uri);
      const s = t.status && t.status.uri;
      if (s && state.polls.has(s)) { clearTimeout(state.polls.get(s)); state.polls.delete(s); }
      const list = li.parentElement;
      li.remove();
      if (list && !list.children.length) fill(list, [], list.dataset.empty || 'None.');
      announce(name + ' was deleted.');
    } catch (e) {
      button.disabled = false;
      announce('Could not delete ' + name + ': ' + e.message, true);
    }
  }

  function takeoutName(t) {
    return 'Takeout ' + t.dbId + ' (' + (t.format || 'archive') + ')';
  }

  function takeoutItem(t) {
    return ticketItem(t, takeoutName(t), 'Includes: ' + (t.include || []).join(', ') + ' · started ' + when(t.created));
  }

  function exportItem(t) {
    const name = (t.applianceName || t.bundleName || 'Export') + ' ' + (t.applianceVersion || t.bundleVersion || '');
    const kind = /\/appliances\//.test(t.uri) ? 'Appliance template export' : 'Bundle export';
    return ticketItem(t, 'Export ' + t.dbId + ': ' + name.trim(), kind + ' · started ' + when(t.created));
  }

  function when(iso) {
    const d = iso ? new Date(iso) : null;
    return d && !isNaN(d) ? d.toLocaleString() : '';
  }

  async function loadTakeouts() {
    try {
      const r = await api('GET', user() + '/takeouts');
      fill($('takeouts'), items(r.body, 'takeouts', 'takeout').map(takeoutItem), 'No takeouts yet.');
    } catch (e) { failed($('takeouts'), 'your takeouts', e); }
  }

  async function loadExports() {
    try {
      // Appliance exports (UForge's listing) and bundle exports (Satchel's), newest first.
      const [apps, bundles] = await Promise.all([
        api('GET', user() + '/exports'),
        api('GET', user() + '/mysoftware/exports'),
      ]);
      const all = items(apps.body, 'applianceExports', 'applianceExport')
        .concat(items(bundles.body, 'softwareBundleExports', 'softwareBundleExport'))
        .sort((a, b) => String(b.created).localeCompare(String(a.created)) || b.dbId - a.dbId);
      fill($('exports'), all.map(exportItem), 'No exports yet.');
    } catch (e) { failed($('exports'), 'your exports', e); }
  }

  function prepend(list, li) {
    const empty = list.querySelector('li.empty');
    if (empty) empty.remove();
    list.prepend(li);
  }

  $('takeout-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const form = ev.currentTarget;
    const format = form.querySelector('input[name="format"]:checked');
    const include = [...form.querySelectorAll('input[name="include"]:checked')].map((i) => i.value);
    if (!include.length) {
      showError('takeout-error', 'Choose at least one kind of thing to include.');
      form.querySelector('input[name="include"]').focus();
      return;
    }
    showError('takeout-error', '');
    const doc = { format: format ? format.value : 'zip', include: include.join(',') };
    const passphrase = $('passphrase').value;
    // Sent only when given (without one, credentials are left out), and in the body, never in a URL
    // that a proxy might log.
    if (passphrase) doc.passphrase = passphrase;
    const button = $('takeout-start');
    button.disabled = true;
    try {
      const r = await api('POST', user() + '/takeouts', { 'Content-Type': 'application/json' }, JSON.stringify(doc));
      $('passphrase').value = '';
      prepend($('takeouts'), takeoutItem(r.body));
      announce(takeoutName(r.body) + ' started.');
    } catch (e) {
      showError('takeout-error', 'Could not start the takeout: ' + e.message);
    } finally {
      button.disabled = false;
    }
  });

  async function startExport(exportsUri, name, button) {
    button.disabled = true;
    try {
      const r = await api('POST', exportsUri);
      prepend($('exports'), exportItem(r.body));
      announce('Export of ' + name + ' started; follow it under Exports.');
    } catch (e) {
      announce('Could not export ' + name + ': ' + e.message, true);
    } finally {
      button.disabled = false;
    }
  }

  // ------------------------------------------------------------------ what the user owns

  let bundles = [];
  let bundlesReady = Promise.resolve();

  async function loadBundles() {
    try {
      const r = await api('GET', user() + '/mysoftware');
      bundles = items(r.body, 'mySoftwareList', 'mySoftware');
      fill($('bundles'), bundles.map((b) => {
        const name = b.name + ' ' + b.version;
        return el('li', {},
          el('div', { class: 'what' },
            el('span', { class: 'name', text: name }),
            el('span', { class: 'meta', text: [bytes(b.size), b.description].filter(Boolean).join(' · ') })),
          el('div', { class: 'actions' },
            el('button', { type: 'button', class: 'secondary', text: 'Export', 'aria-label': 'Export bundle ' + name, onclick: (e) => startExport(b.exportUri, 'bundle ' + name, e.currentTarget) })));
      }), 'No bundles.');
    } catch (e) { bundles = []; failed($('bundles'), 'your bundles', e); }
  }

  async function loadAppliances() {
    try {
      const r = await api('GET', user() + '/appliances');
      fill($('appliances'), items(r.body, 'appliances', 'appliance').map((a) => {
        const name = a.name + ' ' + a.version;
        const n = ((a.mySoftwareUris && a.mySoftwareUris.uri) || []).length;
        return el('li', {},
          el('div', { class: 'what' },
            el('span', { class: 'name', text: name }),
            el('span', { class: 'meta', text: [a.distributionName, a.archName, n + (n === 1 ? ' bundle' : ' bundles')].filter(Boolean).join(' · ') })),
          el('div', { class: 'actions' },
            el('button', { type: 'button', class: 'secondary', text: 'Export', 'aria-label': 'Export appliance template ' + name, onclick: (e) => startExport(a.exportsUri, 'appliance template ' + name, e.currentTarget) })));
      }), 'No appliance templates.');
    } catch (e) { failed($('appliances'), 'your appliance templates', e); }
  }

  // Templates hang off bundles; images are listed for the whole user at once.
  async function loadImages() {
    const list = $('images');
    try {
      const [imgs] = await Promise.all([api('GET', user() + '/images'), bundlesLoaded()]);
      const templates = [];
      for (const b of bundles) {
        try {
          const r = await api('GET', b.uri + '/templates');
          for (const t of items(r.body, 'containerTemplates', 'containerTemplate')) templates.push({ t, b });
        } catch (e) { /* a bundle deleted meanwhile has no templates to list */ }
      }
      const nodes = templates.map(({ t, b }) => {
        const d = t.distribution;
        return el('li', {}, el('div', { class: 'what' },
          el('span', { class: 'name', text: 'Container template ' + t.dbId + ' of ' + b.name + ' ' + b.version }),
          el('span', { class: 'meta', text: d && d.name ? [d.name, d.version, d.arch].filter(Boolean).join(' ') : 'any distribution' })));
      });
      for (const i of items(imgs.body, 'images', 'image')) {
        const name = 'Image ' + (i.name || i.dbId) + (i.version ? ' ' + i.version : '');
        const s = i.status || {};
        const meta = [bytes(i.fileSize || i.size), s.message, i.compress ? '' : 'not compressed: cannot be downloaded'].filter(Boolean).join(' · ');
        nodes.push(el('li', {},
          el('div', { class: 'what' }, el('span', { class: 'name', text: name }), el('span', { class: 'meta', text: meta })),
          i.downloadUri ? el('div', { class: 'actions' },
            el('button', { type: 'button', text: 'Download', 'aria-label': 'Download ' + name, onclick: (e) => downloadImage(i, name, e.currentTarget) })) : null));
      }
      fill(list, nodes, 'No container templates or images.');
    } catch (e) { failed(list, 'your container images', e); }
  }

  function bundlesLoaded() {
    return bundlesReady;
  }

  // Reading an image mints its one-time download id (in its downloadUri).
  async function downloadImage(i, name, button) {
    button.disabled = true;
    try {
      const r = await api('GET', i.uri);
      if (!r.body || !r.body.downloadUri) throw new Error('it cannot be downloaded now');
      startDownload(r.body.downloadUri);
      announce('Download of ' + name + ' started.');
    } catch (e) {
      announce('Could not download ' + name + ': ' + e.message, true);
    } finally {
      button.disabled = false;
    }
  }

  async function loadAccounts() {
    try {
      const r = await api('GET', user() + '/accounts');
      fill($('accounts'), items(r.body, 'credAccounts', 'credAccount').map((a) => {
        const tp = a.targetPlatform || {};
        return el('li', {}, el('div', { class: 'what' },
          el('span', { class: 'name', text: a.name || ('Account ' + a.dbId) }),
          el('span', { class: 'meta', text: [tp.name, tp.type, a.type].filter(Boolean).join(' · ') })));
      }), 'No cloud accounts.');
    } catch (e) { failed($('accounts'), 'your cloud accounts', e); }
  }
})();
