// The last script the page adds to <head>: every extension script before it has run, so onUiLoaded may fire now.
if (window.sdA1111) window.sdA1111.scriptsDone();
