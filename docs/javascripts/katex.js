// Math for pymdownx.arithmatex (generic mode), rendered by the KaTeX shipped in javascripts/katex/
// (no network needed): arithmatex wraps inline math as \( ... \) and display math as \[ ... \] in
// elements of class "arithmatex"; only those are rendered.
function renderMath(root) {
  for (const element of root.querySelectorAll(".arithmatex")) {
    renderMathInElement(element, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true }
      ],
      throwOnError: false
    });
  }
}

if (typeof document$ !== "undefined") {
  document$.subscribe(({ body }) => renderMath(body));   // Material's instant navigation
} else {
  document.addEventListener("DOMContentLoaded", () => renderMath(document.body));
}
