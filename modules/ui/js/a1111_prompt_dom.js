// A1111's markup for the prompt boxes. Extension scripts (tag autocomplete and others) find them with
// "#txt2img_prompt > label > textarea"; Gradio 6 renders label > div.input-container > textarea. Moving the textarea
// up into its label makes those selectors match. The element itself stays the one Gradio created, with its listeners
// and its binding, so typing, Generate, values set from Python and the paste button work as before. A box that
// Gradio renders later (the img2img tab on first visit) or renders again is moved when it appears.
(() => {
  if (window.sdPromptDom) return;
  const IDS = ["txt2img_prompt", "txt2img_neg_prompt", "img2img_prompt", "img2img_neg_prompt"];

  function apply() {
    for (const id of IDS) {
      const textarea = document.querySelector(`#${id} > label > .input-container > textarea`);
      if (!textarea) continue;
      const container = textarea.parentElement;
      container.parentElement.insertBefore(textarea, container);
    }
  }

  window.sdPromptDom = {apply, ids: IDS};
  const observe = () => new MutationObserver(apply).observe(document.body, {childList: true, subtree: true});
  if (document.body) observe(); else document.addEventListener("DOMContentLoaded", observe);
  apply();
})();
