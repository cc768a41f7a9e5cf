// The page-level names that A1111's script.js and ui.js define and that extension scripts call (gradioApp(),
// onUiLoaded(), opts, switch_to_img2img(), ...), written for Gradio 6's markup. Runs inline in <head>, before any
// extension script; a1111_scripts_done.js runs after the last one and lets onUiLoaded fire.
(() => {
  if (window.sdA1111) return;
  const w = window;
  const CONFIG = w.SD_PAGE_CONFIG || {};
  const SETTINGS_ID = CONFIG.settingsId || "settings_json";

  // --- callback lists (A1111 keeps them as globals; a few extensions push to them directly) ---------------------
  w.uiUpdateCallbacks = [];
  w.uiAfterUpdateCallbacks = [];
  w.uiLoadedCallbacks = [];
  w.uiTabChangeCallbacks = [];
  w.optionsChangedCallbacks = [];
  w.optionsAvailableCallbacks = [];
  w.opts = {};
  w.uiCurrentTab = null;

  const state = {scriptsDone: false, loadedFired: false, afterUpdateTimer: null, settingsBox: null};

  w.executeCallbacks = function executeCallbacks(queue, arg) {
    for (const callback of queue) {
      try {
        callback(arg);
      } catch (err) {
        console.error("error in a UI callback", callback, err);
      }
    }
  };
  w.onUiUpdate = (callback) => { w.uiUpdateCallbacks.push(callback); };
  w.onAfterUiUpdate = (callback) => { w.uiAfterUpdateCallbacks.push(callback); };
  w.onUiLoaded = (callback) => { w.uiLoadedCallbacks.push(callback); };
  w.onUiTabChange = (callback) => { w.uiTabChangeCallbacks.push(callback); };
  w.onOptionsChanged = (callback) => { w.optionsChangedCallbacks.push(callback); };
  w.onOptionsAvailable = (callback) => {
    if (Object.keys(w.opts).length > 0) callback();  // already there: at once, as A1111 does
    else w.optionsAvailableCallbacks.push(callback);
  };

  // --- the page ----------------------------------------------------------------------------------------------
  // The node to query the UI from: <gradio-app> (or its shadow root), with getElementById, which A1111 adds.
  w.gradioApp = function gradioApp() {
    const host = document.querySelector("gradio-app");
    if (!host) return document;
    const root = host.shadowRoot || host;
    if (typeof root.getElementById !== "function") root.getElementById = (id) => document.getElementById(id);
    return root;
  };

  function tablist(container) {
    // the container's own tab buttons, not those of tabs nested in it (img2img's mode tabs sit inside #tabs)
    if (!container) return null;
    for (const list of container.querySelectorAll("[role=tablist]")) {
      if (list.closest(".tabs") === container) return list;
    }
    return null;
  }

  function tabButtons(containerId) {
    const list = tablist(document.getElementById(containerId));
    return list ? Array.from(list.querySelectorAll("button[role=tab]")) : [];
  }

  w.get_uiCurrentTab = function get_uiCurrentTab() {
    return tabButtons("tabs").find((b) => b.getAttribute("aria-selected") === "true") || null;
  };

  w.get_uiCurrentTabContent = function get_uiCurrentTabContent() {
    const button = w.get_uiCurrentTab();
    const panel = button && document.getElementById(button.getAttribute("aria-controls"));
    if (panel) return panel;
    const tabs = document.getElementById("tabs");
    return tabs ? Array.from(tabs.children).find((el) => el.classList.contains("tabitem") &&
                                                        el.style.display !== "none") || null : null;
  };

  w.uiElementIsVisible = function uiElementIsVisible(el) {
    for (let node = el; node && node !== document; node = node.parentNode) {
      if (node.nodeType === Node.ELEMENT_NODE && getComputedStyle(node).display === "none") return false;
    }
    return true;
  };

  w.uiElementInSight = function uiElementInSight(el) {
    const rect = el.getBoundingClientRect();
    return rect.bottom > 0 && rect.top < window.innerHeight;
  };

  // Tells Gradio that script code changed an input's value (Gradio reads it on the input event).
  w.updateInput = function updateInput(target) {
    target.dispatchEvent(new Event("input", {bubbles: true}));
  };

  // --- tabs --------------------------------------------------------------------------------------------------
  // Clicks a tab button now, or as soon as Gradio has rendered it (tabs render on first visit).
  function clickTab(containerId, index) {
    const tryClick = () => {
      const button = tabButtons(containerId)[index];
      if (button) button.click();
      return !!button;
    };
    if (tryClick()) return;
    const observer = new MutationObserver(() => { if (tryClick()) observer.disconnect(); });
    observer.observe(document.body, {childList: true, subtree: true});
    setTimeout(() => observer.disconnect(), 10000);
  }

  function mainTab(id) {
    const index = tabButtons("tabs").findIndex((b) => b.getAttribute("aria-controls") === `tab_${id}`);
    clickTab("tabs", Math.max(index, 0));
  }

  // Each returns its arguments: A1111 uses them as the JavaScript step of Send-to buttons.
  w.switch_to_txt2img = function switch_to_txt2img(...args) { mainTab("txt2img"); return args; };
  w.switch_to_extras = function switch_to_extras(...args) { mainTab("extras"); return args; };
  w.switch_to_img2img_tab = function switch_to_img2img_tab(no) { mainTab("img2img"); clickTab("mode_img2img", no); };
  w.switch_to_img2img = function switch_to_img2img(...args) { w.switch_to_img2img_tab(0); return args; };
  w.switch_to_sketch = function switch_to_sketch(...args) { w.switch_to_img2img_tab(1); return args; };
  w.switch_to_inpaint = function switch_to_inpaint(...args) { w.switch_to_img2img_tab(2); return args; };
  w.switch_to_inpaint_sketch = function switch_to_inpaint_sketch(...args) { w.switch_to_img2img_tab(3); return args; };

  // The position of the selected tab among the tabs of the element `tabId` (0 when none is selected).
  w.get_tab_index = function get_tab_index(tabId) {
    return Math.max(tabButtons(tabId).findIndex((b) => b.getAttribute("aria-selected") === "true"), 0);
  };
  // A1111's img2img submit step: the arguments without the last two, the first replaced by the mode tab's index.
  w.get_img2img_tab_index = function get_img2img_tab_index(...args) {
    const out = args.slice(0, Math.max(args.length - 2, 0));
    out[0] = w.get_tab_index("mode_img2img");
    return out;
  };
  w.create_tab_index_args = function create_tab_index_args(tabId, args) {
    const out = Array.from(args);
    out[0] = w.get_tab_index(tabId);
    return out;
  };

  // --- galleries and generation ------------------------------------------------------------------------------
  function visibleGallery() {
    const content = w.get_uiCurrentTabContent();
    if (!content) return null;
    return Array.from(content.querySelectorAll("[id$=_gallery]")).find((g) => w.uiElementIsVisible(g)) || null;
  }

  // The index of the image selected in the visible tab's gallery, or -1 (none selected: the grid view).
  w.selected_gallery_index = function selected_gallery_index() {
    const gallery = visibleGallery();
    if (!gallery) return -1;
    const thumbs = Array.from(gallery.querySelectorAll(".thumbnails .thumbnail-item"));
    return thumbs.findIndex((t) => t.classList.contains("selected"));
  };

  // Our Generate buttons send their own inputs; these keep A1111's calling form for scripts that use them.
  w.create_submit_args = function create_submit_args(args) { return Array.from(args); };
  w.submit = function submit(...args) { return args; };
  w.submit_img2img = function submit_img2img(...args) { return args; };

  w.setRandomSeed = function setRandomSeed(elemId) {
    const input = document.querySelector(`#${CSS.escape(elemId)} input`);
    if (!input) return [];
    input.value = "-1";
    w.updateInput(input);
    return [];
  };

  // Shows "Reloading..." and reloads the page once the server answers again.
  w.restart_reload = function restart_reload() {
    document.body.innerHTML = '<h1 style="font-family:monospace;margin-top:20%;color:gray;text-align:center;">' +
      "Reloading...</h1>";
    const ping = () => fetch(location.href, {method: "HEAD", cache: "no-store"})
      .then((r) => { if (r.ok) location.reload(); else setTimeout(ping, 500); })
      .catch(() => setTimeout(ping, 500));
    setTimeout(ping, 2000);
    return [];
  };

  // A1111's InputAccordion: an accordion with a checkbox; sets it and lets Gradio know.
  w.inputAccordionChecked = function inputAccordionChecked(id, checked) {
    const accordion = w.gradioApp().getElementById(id);
    if (accordion && accordion.visibleCheckbox) {
      accordion.visibleCheckbox.checked = checked;
      if (accordion.onVisibleCheckboxChange) accordion.onVisibleCheckboxChange();
      return;
    }
    const box = document.querySelector(`#${CSS.escape(id)}-checkbox input[type=checkbox]`) ||
      (accordion && accordion.querySelector("input[type=checkbox]"));
    if (box && box.checked !== !!checked) box.click();
  };

  // A1111's hints.js: `titles` maps a control's text (or value) to its tooltip; extensions merge theirs into it
  // (`titles = {...titles, ...}`, so it must exist before they run). Added elements get the title attribute.
  w.titles = w.titles || {};
  function applyTitles(mutations) {
    if (!w.titles || Object.keys(w.titles).length === 0) return;
    for (const mutation of mutations || []) {
      for (const node of mutation.addedNodes) {
        if (node.nodeType !== 1) continue;
        const found = node.matches("span, button, select, p") ? [node] : [];
        for (const el of [...found, ...node.querySelectorAll("span, button, select, p")]) {
          if (el.title) continue;
          const tip = w.titles[el.textContent.trim()] || (el.value && w.titles[el.value]);
          if (tip) el.title = tip;
        }
      }
    }
  }

  // Light or dark page: Gradio reads ?__theme= from the address.
  w.set_theme = function set_theme(theme) {
    const url = new URL(location.href);
    if (url.searchParams.has("__theme")) return;
    url.searchParams.set("__theme", theme);
    location.replace(url.toString());
  };

  // --- opts from #settings_json --------------------------------------------------------------------------------
  const textValue = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, "value");

  function readOptions(box) {
    try {
      w.opts = JSON.parse(textValue.get.call(box) || "{}");
      return true;
    } catch (err) {
      console.error("#settings_json does not hold JSON", err);
      return false;
    }
  }

  // Reads the settings the first time the box exists, and again whenever Gradio writes a new value into it.
  function watchSettings() {
    const box = document.querySelector(`#${SETTINGS_ID} textarea`);
    if (!box || box === state.settingsBox) return;
    state.settingsBox = box;
    const first = Object.keys(w.opts).length === 0;
    Object.defineProperty(box, "value", {
      configurable: true,
      get() { return textValue.get.call(this); },
      set(v) {
        const before = textValue.get.call(this);
        textValue.set.call(this, v);
        if (textValue.get.call(this) !== before && readOptions(this)) w.executeCallbacks(w.optionsChangedCallbacks);
      },
    });
    if (!readOptions(box)) return;
    if (first) w.executeCallbacks(w.optionsAvailableCallbacks);
    w.executeCallbacks(w.optionsChangedCallbacks);
  }

  // --- the page's life cycle ----------------------------------------------------------------------------------
  function maybeUiLoaded() {
    if (state.loadedFired || !state.scriptsDone || !document.getElementById("txt2img_prompt")) return;
    if (w.sdPromptDom) w.sdPromptDom.apply();
    watchSettings();
    state.loadedFired = true;
    w.executeCallbacks(w.uiLoadedCallbacks);
  }

  function checkTab() {
    const tab = w.get_uiCurrentTab();
    if (tab && tab !== w.uiCurrentTab) {
      w.uiCurrentTab = tab;
      w.executeCallbacks(w.uiTabChangeCallbacks);
    }
  }

  function onMutations(mutations) {
    if (w.sdPromptDom) w.sdPromptDom.apply();
    watchSettings();
    maybeUiLoaded();
    applyTitles(mutations);
    w.executeCallbacks(w.uiUpdateCallbacks, mutations);
    clearTimeout(state.afterUpdateTimer);
    state.afterUpdateTimer = setTimeout(() => w.executeCallbacks(w.uiAfterUpdateCallbacks), 200);
    checkTab();
  }

  // Extension scripts run after the page has loaded (Gradio adds them), but some wait for DOMContentLoaded or
  // load; until the last one has run, a listener for an event that is already over is called at once instead.
  const addListener = EventTarget.prototype.addEventListener;
  function lateListener(target, type) {
    if (state.scriptsDone) return false;
    if (type === "DOMContentLoaded" && (target === document || target === window)) {
      return document.readyState !== "loading";
    }
    return type === "load" && target === window && document.readyState === "complete";
  }
  function addEventListenerLate(type, listener, options) {
    if (lateListener(this, type) && listener) {
      const event = new Event(type);
      setTimeout(() => (typeof listener === "function" ? listener.call(this, event) : listener.handleEvent(event)), 0);
      return;
    }
    return addListener.call(this, type, listener, options);
  }
  document.addEventListener = addEventListenerLate;
  window.addEventListener = addEventListenerLate;

  w.sdA1111 = {
    // called by a1111_scripts_done.js, the last script in <head>
    scriptsDone() {
      state.scriptsDone = true;
      delete document.addEventListener;
      delete window.addEventListener;
      maybeUiLoaded();
    },
    get uiLoaded() { return state.loadedFired; },
  };

  function start() {
    const root = document.querySelector("gradio-app") || document.body;
    new MutationObserver(onMutations).observe(root, {childList: true, subtree: true});
    // Gradio 6 switches tabs by attributes alone once a tab was rendered
    new MutationObserver(checkTab).observe(root, {subtree: true, attributes: true, attributeFilter: ["aria-selected"]});
    for (const href of CONFIG.css || []) {
      const link = document.createElement("link");
      link.rel = "stylesheet";
      link.href = href;
      link.dataset.sd = "extension-css";
      document.body.appendChild(link);  // after every style sheet Gradio has in <head> now or adds later
    }
    if (CONFIG.theme) w.set_theme(CONFIG.theme);
  }
  if (document.body) start(); else document.addEventListener("DOMContentLoaded", start);
})();
