// The demo page of `nlp-rnn serve`: lists the models and shows one page per model, fit to
// what its task module declared as `demo_widget` in the export's metadata. Every prediction
// goes through the same TF Serving REST API a client would use. No libraries, no network.
"use strict";

const main = document.getElementById("main");

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function predict(model, signatureName, inputs) {
  const response = await fetch(`/v1/models/${encodeURIComponent(model.name)}:predict`, {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({signature_name: signatureName, inputs}),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body.outputs;
}

function numberInput(id, label, value, attrs) {
  const input = el("input", {id, type: "number", value: String(value), ...attrs});
  return [el("label", {for: id}, label), input];
}

// A form: its fields, a button, and a result area filled by `run` (which may throw).
function form(fields, buttonText, run) {
  const result = el("div", {class: "result", id: "result"});
  const button = el("button", {id: "run"}, buttonText);
  async function go() {
    button.disabled = true;
    result.replaceChildren(el("p", {class: "muted"}, "…"));
    try {
      result.replaceChildren(...[await run()].flat(Infinity));
    } catch (error) {
      result.replaceChildren(el("p", {class: "error"}, String(error.message || error)));
    } finally {
      button.disabled = false;
    }
  }
  button.addEventListener("click", go);
  for (const field of fields) {
    if (field.tagName === "TEXTAREA") {
      field.addEventListener("keydown", (e) => { if (e.key === "Enter" && e.ctrlKey) go(); });
    }
  }
  return el("div", {class: "panel"}, fields.filter((f) => f.tagName === "TEXTAREA"),
            el("div", {class: "controls"}, fields.filter((f) => f.tagName !== "TEXTAREA"),
               button), result);
}

function hue(text) {
  let h = 0;
  for (const c of text) h = (h * 31 + c.codePointAt(0)) % 360;
  return h;
}

// ---- widgets, keyed by the `demo_widget` a task module exports ----------------------------

const widgets = {
  // text -> a label and one bar per class probability
  label_bars(model) {
    const text = el("textarea", {id: "text", placeholder: "Some text to classify"});
    const labels = model.metadata.labels || [];
    return form([text], "Classify", async () => {
      const out = await predict(model, "serving_default", {text: [text.value]});
      const probabilities = out.probabilities[0];
      const best = Math.max(...probabilities);
      return [el("div", {class: "label", id: "label"}, out.label[0]),
              probabilities.map((p, i) => el("div", {class: "bar-row" + (p === best ? " top" : ""),
                                                      "data-label": labels[i] ?? String(i)},
                el("span", {class: "bar-name"}, labels[i] ?? String(i)),
                el("div", {class: "bar"},
                   el("div", {class: "bar-fill", style: `width: ${(100 * p).toFixed(1)}%`})),
                el("span", {class: "bar-value"}, p.toFixed(3))))];
    });
  },

  // text -> the text with every entity highlighted inline and labelled by its type
  entity_spans(model) {
    const text = el("textarea", {id: "text", placeholder: "Text to tag, words separated by spaces"});
    return form([text], "Find entities", async () => {
      const out = await predict(model, "serving_default", {text: [text.value]});
      const n = out.lengths[0];
      const tokens = out.tokens[0].slice(0, n), tags = out.tags[0].slice(0, n);
      const parts = [];
      for (let i = 0; i < n;) {
        const tag = tags[i];
        if (tag === "O" || tag === "") { parts.push(tokens[i], " "); i++; continue; }
        const type = tag.slice(2);
        let j = i + 1;
        while (j < n && tags[j] === "I-" + type) j++;
        const h = hue(type);
        parts.push(el("mark", {class: "entity", "data-type": type,
                               style: `background: hsl(${h}, 80%, 85%)`},
                      tokens.slice(i, j).join(" "),
                      el("span", {class: "entity-label", style: `color: hsl(${h}, 60%, 30%)`},
                         type)), " ");
        i = j;
      }
      return el("div", {class: "entities", id: "entities"}, parts);
    });
  },

  // text -> a translation, with a beam-width control and the attention heatmap
  seq2seq(model) {
    const text = el("textarea", {id: "text", placeholder: "A sentence to translate"});
    const [beamLabel, beam] = numberInput("beam-width", "beam width", model.metadata.beam_width ?? 4,
                                          {min: "1", max: "32"});
    const signatures = model.signatures || {};
    return form([text, beamLabel, beam], "Translate", async () => {
      const width = Math.max(1, parseInt(beam.value, 10) || 1);
      if (!signatures.translate_attention) {
        const out = await predict(model, "serving_default", {text: [text.value]});
        return el("div", {class: "translated", id: "translated"}, out.translation[0]);
      }
      const out = await predict(model, "translate_attention",
                                {text: [text.value], beam_width: width});
      const target = out.output_tokens[0].filter((t) => t !== "");
      const source = out.source_tokens[0].filter((t) => t !== "");
      const weights = out.attention[0];
      const heat = el("table", {class: "heatmap", id: "heatmap"},
        el("thead", {}, el("tr", {}, el("th", {}), source.map((s) => el("th", {}, s)))),
        el("tbody", {}, target.map((t, i) => el("tr", {}, el("th", {}, t),
          source.map((s, j) => {
            const w = (weights[i] || [])[j] || 0;
            return el("td", {title: `${t} ← ${s}: ${w.toFixed(3)}`,
                             style: `background: rgba(9, 105, 218, ${w.toFixed(3)})`});
          })))));
      return [el("div", {class: "translated", id: "translated"}, out.translation[0]),
              el("p", {class: "muted"}, "Attention: where the decoder looked for each output token"),
              heat];
    });
  },

  // prompt -> a sampled continuation
  prompt(model) {
    const meta = model.metadata;
    const prompt = el("textarea", {id: "prompt", placeholder: "A prompt to continue"});
    const [tLabel, temperature] = numberInput("temperature", "temperature", meta.temperature ?? 0.5,
                                              {min: "0", step: "0.1"});
    const [kLabel, topK] = numberInput("top-k", "top-k", meta.top_k ?? 0, {min: "0"});
    const [lLabel, length] = numberInput("length", "length", meta.max_length ?? 60,
                                         {min: "1", max: "2000"});
    return form([prompt, tLabel, temperature, kLabel, topK, lLabel, length], "Generate",
      async () => {
        const out = await predict(model, "serving_default", {
          prompt: [prompt.value],
          max_length: Math.max(1, parseInt(length.value, 10) || 1),
          temperature: Math.max(0, parseFloat(temperature.value) || 0),
          top_k: Math.max(0, parseInt(topK.value, 10) || 0),
        });
        return el("p", {class: "generated"}, el("span", {class: "prompt"}, prompt.value),
                  el("span", {class: "continuation", id: "continuation"}, out.continuation[0]));
      });
  },

  // anything else: a columnar request in JSON against any signature
  raw(model) {
    const names = Object.keys(model.signatures || {});
    const body = el("textarea", {id: "request", style: "min-height: 8em"},
                    JSON.stringify({signature_name: "serving_default", inputs: {}}, null, 2));
    return form([body], "Predict", async () => {
      const request = JSON.parse(body.value);
      const out = await predict(model, request.signature_name, request.inputs);
      return [el("p", {class: "muted"}, `signatures: ${names.join(", ")}`),
              el("pre", {class: "json"}, JSON.stringify(out, null, 2))];
    });
  },
};

// ---- pages --------------------------------------------------------------------------------

function listPage(models) {
  if (!models.length) return el("p", {class: "muted"}, "No models are served.");
  return [el("h1", {}, "Models"),
          el("ul", {class: "cards"}, models.map((m) => el("li", {},
            el("a", {href: `/demo/${encodeURIComponent(m.name)}`}, m.name), " ",
            el("span", {class: "muted"},
               m.version === null ? "(no version loaded yet)"
                 : `version ${m.version} · ${(m.metadata || {}).demo_widget || "raw"}`))))];
}

function modelPage(model) {
  const kind = (model.metadata || {}).demo_widget;
  const widget = widgets[kind] || widgets.raw;
  return [el("h1", {}, model.name, " ", el("span", {class: "version"},
                                             `version ${model.version}`)),
          widget(model)];
}

async function start() {
  try {
    const response = await fetch("/nlp-rnn/models");
    const {models} = await response.json();
    const match = location.pathname.match(/^\/demo\/([^/]+)$/);
    if (!match) {
      main.replaceChildren(...[listPage(models)].flat(Infinity));
      return;
    }
    const name = decodeURIComponent(match[1]);
    const model = models.find((m) => m.name === name);
    if (!model || model.version === null) {
      main.replaceChildren(el("p", {class: "error"}, `No model ${name} is served.`));
      return;
    }
    document.title = `${name} · nlp-rnn serve`;
    main.replaceChildren(...modelPage(model));
    main.dataset.ready = "true";
  } catch (error) {
    main.replaceChildren(el("p", {class: "error"}, String(error)));
  }
}

start();
