"""Browser helpers for the localization tests: open the UI, switch language, and collect every translatable text the
UI renders that a localization map lacks."""
from __future__ import annotations

# Strings from the Gradio config: what components show even before they are rendered (tabs not visited yet,
# dropdown choices that only appear when the list is open). Run through the page's own lookup, so the same
# rules (numbers, icons, name lists) apply as when the page translates.
CONFIG_STRINGS_JS = """
() => {
  const L = window.sdLocalization;
  for (const c of window.gradio_config.components) {
    const p = c.props || {};
    if (p.visible === false && c.type !== 'tabitem') continue;
    const texts = [];
    if (typeof p.label === 'string' && (p.show_label !== false || ['tabitem', 'accordion'].includes(c.type)))
      texts.push(p.label);
    for (const key of ['info', 'placeholder']) if (typeof p[key] === 'string') texts.push(p[key]);
    if (c.type === 'button' && typeof p.value === 'string') texts.push(p.value);
    if (Array.isArray(p.choices) && !L.isNameList(p.elem_id))
      for (const choice of p.choices) texts.push(Array.isArray(choice) ? String(choice[0]) : String(choice));
    for (const t of texts) L.lookup(t);
  }
}
"""

# Show everything that is rendered only on demand: every tab (nested ones too), closed accordions, the seed "Extra"
# rows. Returns how many things it opened, so the caller can repeat until nothing new appears.
REVEAL_JS = """
() => {
  let opened = 0;
  window.__sdVisitedTabs = window.__sdVisitedTabs || new Set();
  for (const b of document.querySelectorAll('button[role=tab]')) {
    const key = b.id || b.closest('[id]')?.id + '/' + [...b.parentElement.children].indexOf(b);
    if (window.__sdVisitedTabs.has(key) || b.offsetParent === null) continue;
    window.__sdVisitedTabs.add(key);
    b.click();
    opened++;
    return opened;  // one at a time: the click renders new content (and maybe new tabs)
  }
  for (const acc of document.querySelectorAll('.label-wrap:not(.open)')) {
    if (acc.offsetParent === null) continue;
    acc.click();
    opened++;
  }
  for (const box of document.querySelectorAll('[id$=_subseed_show] input[type=checkbox]')) {
    if (!box.checked && box.offsetParent !== null) { box.click(); opened++; }
  }
  return opened;
}
"""


def open_ui(page, server) -> None:
    page.goto(server.url + "/")
    page.locator("#txt2img_prompt textarea").wait_for(state="visible")
    page.wait_for_function("() => window.sdLocalization && window.sdLocalization.state.ready")


def switch_language(page, name: str) -> None:
    """Through the visible switch in the top bar, as a user does."""
    box = page.locator("#localization_switch input[role=combobox]")
    box.click()
    listbox = box.get_attribute("aria-controls")
    label = "English" if name == "None" else name
    page.locator(f"#{listbox} [role=option][aria-label=\"{label}\"]").click()
    page.wait_for_function("(n) => window.sdLocalization.name === n", arg=name)


def collect_missing(page, name: str) -> list[str]:
    """Every translatable text the whole UI renders (all tabs opened) that the map `name` has no translation for."""
    page.evaluate("(n) => window.sdLocalization.use(n)", name)
    page.evaluate("() => window.sdLocalization.startCollecting()")
    for _ in range(200):  # bounded: each round opens at least one thing or ends the loop
        opened = page.evaluate(REVEAL_JS)
        # let Gradio render what the click asked for; the observer translates (and collects) as it appears
        page.wait_for_function("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))")
        if not opened:
            break
    page.evaluate(CONFIG_STRINGS_JS)
    page.evaluate("() => window.sdLocalization.translatePage()")
    return page.evaluate("() => window.sdLocalization.missing()")
