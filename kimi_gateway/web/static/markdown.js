// Model output as Markdown, made safe: it is untrusted, so nothing in it may run or load anything.
//
// Two layers. marked renders raw HTML in the text as text (not as markup), links only for http(s) and
// mailto (anything else, `javascript:` first, stays text), and images as links (an image would load from
// wherever the model says). DOMPurify then cleans the result again, in case a marked change lets
// something through; and the page's policy allows no inline script and no other origin in any case.
import { Marked } from "../vendor/marked/marked.esm.js";

const DOMPurify = window.DOMPurify; // purify.min.js, loaded by the page before this module

const SAFE_URL = /^(https?:|mailto:)/i;

function escape(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

const marked = new Marked({
  gfm: true,
  breaks: true,
  renderer: {
    html({ text }) {
      return escape(text);
    },
    link({ href, tokens, text }) {
      const label = tokens ? this.parser.parseInline(tokens) : escape(text);
      if (!SAFE_URL.test(href || "")) return `${label} (${escape(href || "")})`;
      return `<a href="${escape(href)}" rel="noopener noreferrer nofollow" target="_blank">${label}</a>`;
    },
    image({ href, text }) {
      const label = `[image: ${escape(text || href || "")}]`;
      if (!SAFE_URL.test(href || "")) return label;
      return `<a href="${escape(href)}" rel="noopener noreferrer nofollow" target="_blank">${label}</a>`;
    },
  },
});

const PURIFY = {
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
  FORBID_TAGS: ["img", "svg", "math", "style", "form", "input", "button", "textarea", "select", "iframe", "video", "audio", "source", "picture", "link", "meta"],
  FORBID_ATTR: ["style", "srcset", "id", "name"],
  ADD_ATTR: ["target"],
  RETURN_DOM_FRAGMENT: true,
};

export function render(text) {
  const html = marked.parse(text || "", { async: false });
  return DOMPurify.sanitize(html, PURIFY);
}
