// Live UI translation from A1111-format localization maps (English text -> translation).
//
// Only what is displayed changes: text nodes, the title and placeholder attributes, and the text a dropdown shows for
// its selected choice. Component values, and so everything sent to the server, stay English. The English original of
// every node we touch is remembered, so switching to another language (or back to English) needs no reload, and a
// MutationObserver translates whatever Gradio renders later (tabs rendered on first visit, results, errors).
(() => {
  if (window.sdLocalization) return;
  const CONFIG = window.SD_LOCALIZATION_CONFIG || {base: ""};

  // Dropdowns whose choices are names (models, files, styles, samplers, languages): their label is translated, the
  // choices are not.
  const NAME_LISTS = ["#setting_sd_model_checkpoint", "[id$='_styles']", "[id$='_sampling']", "[id$='_model_name']",
                      "#localization_switch", "#setting_localization", "#setting_quicksettings_list", ".sd-names",
                      ".file-preview", "[id$='_controlnet_preprocessor_dropdown']",
                      "[id$='_controlnet_model_dropdown']", "#extensions_enabled", "#extensions_update"].join(",");
  const SKIP_TAGS = new Set(["SCRIPT", "STYLE", "TEXTAREA", "NOSCRIPT", "svg", "SVG", "CODE", "PRE"]);
  const ATTRIBUTES = ["title", "placeholder"];
  const re_no_words = /^[\s\d.,:;!?/\\|()\[\]{}%+\-*=<>#x×·…—–'"]*$/u;  // numbers, sizes (512x512), counters (0/75)
  // timers, rates and sizes: 0.5s, 1.2/3.4s, 2.1it/s, 11.5 KB
  const re_measure = /^[\d.,:\/\s]+(s|ms|px|it\/s|s\/it|B|KB|kB|MB|GB)?$/u;
  const re_dotted = /^[\w-]*(\.[\w-]+)+$/u;  // file names, extensions, ids: model.safetensors, .png, common.complete
  const re_letter = /\p{L}/u;
  const re_emoji = /[\p{Extended_Pictographic}\u{1F3FB}-\u{1F3FF}\u{1F9B0}-\u{1F9B3}]/u;
  const re_placeholder = /\{[A-Za-z0-9_]*\}/g;

  const state = {
    name: "None", map: null, rtl: false, templates: [], generation: 0, lastApplyMs: 0,
    missing: null,  // when a Set: every translatable text seen without a translation (for the coverage test)
  };
  const texts = new WeakMap();      // text node -> {en, shown, gen}
  const attrs = new WeakMap();      // element -> {attribute: {en, shown, gen}}
  const mapCache = new Map();       // name -> Promise<{translations, rtl}>
  const valueDesc = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, "value");
  const hookedInputs = new Set();

  function translatable(text) {
    return text.length > 0 && re_letter.test(text) && !re_no_words.test(text) && !re_measure.test(text) &&
      !re_dotted.test(text) && !re_emoji.test(text);
  }

  function compileTemplates(map) {
    // Our own packs may carry messages with {placeholders} ("Saved to {0}"); A1111 packs simply have none.
    const out = [];
    for (const key of Object.keys(map)) {
      if (!key.includes("{") || !re_placeholder.test(key)) continue;
      re_placeholder.lastIndex = 0;
      const names = [];
      const pattern = key.split(re_placeholder).map(s => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
      key.replace(re_placeholder, m => { names.push(m); return m; });
      if (!names.length) continue;
      let source = pattern[0];
      // a placeholder never spans the " · " between the parts of a status line
      for (let i = 0; i < names.length; i++) source += "((?:(?! · )[\\s\\S])+?)" + pattern[i + 1];
      out.push({re: new RegExp("^" + source + "$", "u"), names, value: map[key]});
    }
    return out;
  }

  function lookupOne(text) {
    const map = state.map;
    const t = Object.prototype.hasOwnProperty.call(map, text) ? map[text] : undefined;
    if (typeof t === "string") return t;
    for (const tpl of state.templates) {
      const m = tpl.re.exec(text);
      if (!m) continue;
      let out = tpl.value;
      tpl.names.forEach((name, i) => { out = out.split(name).join(m[i + 1]); });
      return out;
    }
    return null;
  }

  // English -> what to show, or null when there is nothing to change.
  function lookup(text) {
    if (!state.map) return null;
    const trimmed = text.trim();
    if (!translatable(trimmed)) return null;
    let t = lookupOne(trimmed);
    if (t === null && trimmed.includes(" · ")) {
      // status lines are parts joined by " · " ("Batch 1/2 · Step 3/20 · 15% · ETA: 2s"): translate part by part
      const parts = trimmed.split(" · ");
      const done = parts.map(part => (translatable(part) ? lookupOne(part) : part));
      if (done.every(x => x !== null)) t = done.join(" · ");
    }
    if (t === null) {
      if (state.missing) state.missing.add(trimmed);
      return null;
    }
    return trimmed === text ? t : text.replace(trimmed, t);
  }

  function inNameList(el) {
    const list = el.closest(NAME_LISTS);
    return !!list && !el.closest("[data-testid=block-info]");
  }

  function skipElement(el) {
    for (let e = el; e; e = e.parentElement) {
      if (SKIP_TAGS.has(e.tagName) || e.isContentEditable || e.classList.contains("sd-no-translate")) return true;
    }
    return inNameList(el);
  }

  function translateText(node) {
    const current = node.nodeValue;
    let rec = texts.get(node);
    if (rec && current === rec.shown && rec.gen === state.generation) return;
    if (!rec || current !== rec.shown) rec = {en: current};  // new node, or the app changed its text
    if (!current || !current.trim()) return;
    const parent = node.parentElement;
    if (!parent || skipElement(parent)) return;
    const shown = lookup(rec.en) ?? rec.en;
    rec.shown = shown;
    rec.gen = state.generation;
    texts.set(node, rec);
    if (shown !== current) node.nodeValue = shown;
  }

  function translateAttributes(el) {
    for (const name of ATTRIBUTES) {
      if (!el.hasAttribute(name)) continue;
      const current = el.getAttribute(name);
      let all = attrs.get(el);
      if (!all) { all = {}; attrs.set(el, all); }
      let rec = all[name];
      if (rec && current === rec.shown && rec.gen === state.generation) continue;
      if (!rec || current !== rec.shown) rec = {en: current};
      // a textarea's text is the user's, but its placeholder and title are ours
      if (el.tagName === "TEXTAREA" ? !el.parentElement || skipElement(el.parentElement) : skipElement(el)) continue;
      const shown = lookup(rec.en) ?? rec.en;
      rec.shown = shown;
      rec.gen = state.generation;
      all[name] = rec;
      if (shown !== current) el.setAttribute(name, shown);
    }
  }

  // A dropdown shows its selected choice in an <input>. Reading .value must still give the English choice (Gradio
  // and scripts read it), so the translation lives only in what the box displays.
  function hookCombobox(input) {
    if (input.__sdL10n) { input.__sdL10n(); return; }
    if (inNameList(input)) return;
    let en = valueDesc.get.call(input);
    let shown = en;
    const show = () => {
      const current = valueDesc.get.call(input);
      if (current !== shown) en = current;  // typed by the user or set before we hooked in
      shown = document.activeElement === input ? en : (lookup(en) ?? en);
      if (shown !== current) valueDesc.set.call(input, shown);
    };
    Object.defineProperty(input, "value", {
      configurable: true,
      get() { const v = valueDesc.get.call(this); return v === shown ? en : v; },
      set(v) { en = v == null ? "" : String(v); shown = en; valueDesc.set.call(this, en); show(); },
    });
    input.addEventListener("focus", () => { if (shown !== en) { valueDesc.set.call(input, en); shown = en; } });
    input.addEventListener("blur", () => setTimeout(show, 0));  // after Gradio has restored the selected choice
    input.__sdL10n = show;
    hookedInputs.add(input);
    show();
  }

  function translateTree(root) {
    if (root.nodeType === Node.TEXT_NODE) { translateText(root); return; }
    if (root.nodeType !== Node.ELEMENT_NODE && root.nodeType !== Node.DOCUMENT_FRAGMENT_NODE) return;
    if (root.nodeType === Node.ELEMENT_NODE) {
      if (root.tagName === "TEXTAREA") translateAttributes(root);
      if (SKIP_TAGS.has(root.tagName)) return;
      translateAttributes(root);
      if (root.tagName === "INPUT" && root.getAttribute("role") === "combobox") hookCombobox(root);
    }
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT, {
      acceptNode(n) {
        if (n.nodeType === Node.ELEMENT_NODE && SKIP_TAGS.has(n.tagName)) {
          if (n.tagName === "TEXTAREA") translateAttributes(n);
          return NodeFilter.FILTER_REJECT;
        }
        return NodeFilter.FILTER_ACCEPT;
      },
    });
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      if (n.nodeType === Node.TEXT_NODE) translateText(n);
      else {
        if (n.hasAttribute("title") || n.hasAttribute("placeholder")) translateAttributes(n);
        if (n.tagName === "INPUT" && n.getAttribute("role") === "combobox") hookCombobox(n);
      }
    }
  }

  function translatePage() {
    const t0 = performance.now();
    if (document.body) translateTree(document.body);
    for (const input of hookedInputs) {
      if (!input.isConnected) hookedInputs.delete(input);
      else input.__sdL10n();
    }
    if (document.title) {
      const en = document.__sdTitle ?? document.title;
      document.__sdTitle = en;
      document.title = lookup(en) ?? en;
    }
    document.documentElement.dir = state.rtl ? "rtl" : "ltr";
    state.lastApplyMs = performance.now() - t0;
    return state.lastApplyMs;
  }

  const observer = new MutationObserver((mutations) => {
    if (!state.map && state.generation === 0) return;  // English from the start: nothing to do
    for (const m of mutations) {
      if (m.type === "childList") m.addedNodes.forEach(translateTree);
      else if (m.type === "characterData") translateText(m.target);
      else if (m.type === "attributes") translateAttributes(m.target);
    }
  });

  function start() {
    observer.observe(document.documentElement, {childList: true, subtree: true, characterData: true,
                                                attributes: true, attributeFilter: ATTRIBUTES});
  }

  function fetchMap(name) {
    if (!name || name === "None") return Promise.resolve({translations: null, rtl: false});
    if (!mapCache.has(name)) {
      const url = `${CONFIG.base}/localizations/${encodeURIComponent(name)}.json`;
      mapCache.set(name, fetch(url).then(r => {
        if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
        return r.json();
      }).then(data => {
        const rtl = data.rtl === true;
        delete data.rtl;
        return {translations: data, rtl};
      }).catch(err => { mapCache.delete(name); throw err; }));
    }
    return mapCache.get(name);
  }

  function setMap(name, translations, rtl) {
    state.name = name || "None";
    state.map = translations;
    state.rtl = rtl;
    state.templates = translations ? compileTemplates(translations) : [];
    state.generation += 1;
    return translatePage();
  }

  // Switches the page to `name` ("None" = English). Resolves to the milliseconds the page took to translate.
  async function use(name) {
    const {translations, rtl} = await fetchMap(name);
    return setMap(name, translations, rtl);
  }

  async function init() {
    try {
      const r = await fetch(`${CONFIG.base}/localizations`);
      const info = await r.json();
      for (const e of info.errors || []) console.error(`localization file skipped: ${e}`);
      if (info.current && info.current !== "None" && state.generation === 0) await use(info.current);
    } catch (err) {
      console.error("localization:", err);
    }
    state.ready = true;
  }

  window.sdLocalization = {
    use, translatePage, state, lookup, translatable,
    get name() { return state.name; },
    // Whether a component (by elem_id) lists names whose choices are never translated.
    isNameList(elemId) {
      if (!elemId) return false;
      const probe = document.createElement("div");
      probe.id = elemId;
      return probe.matches(NAME_LISTS);
    },
    // The coverage test: collect every translatable text seen from now on that the map lacks.
    startCollecting() { state.missing = new Set(); state.generation += 1; translatePage(); },
    missing() { return state.missing ? [...state.missing].sort() : []; },
  };
  start();
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
