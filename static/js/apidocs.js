/* Renders the OpenAPI schema as a plain, accessible page (no CDN, no framework). */
(function () {
  "use strict";
  var root = document.getElementById("api-docs");
  if (!root) return;
  var status = document.getElementById("api-docs-status");
  var url = new URL(root.dataset.schemaUrl, window.location.href);
  url.searchParams.set("format", "json");

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") node.textContent = attrs[key];
      else node.setAttribute(key, attrs[key]);
    });
    (children || []).forEach(function (child) { if (child) node.appendChild(child); });
    return node;
  }
  function refName(ref) { return ref.split("/").pop(); }
  function typeOf(schema) {
    if (!schema) return "";
    if (schema.$ref) return refName(schema.$ref);
    if (schema.allOf && schema.allOf.length === 1) return typeOf(schema.allOf[0]);
    if (schema.oneOf) return schema.oneOf.map(typeOf).join(" | ");
    if (schema.type === "array") return typeOf(schema.items) + "[]" + bounds(schema);
    var type = schema.type || "object";
    if (schema.format) type += " (" + schema.format + ")";
    if (schema.enum) type += ": " + schema.enum.filter(function (v) { return v !== null && v !== ""; }).join(", ");
    if (schema.nullable) type += ", nullable";
    return type + bounds(schema);
  }
  // The limits the server validates: 1–200, at most 2 items, default 50.
  function bounds(schema) {
    var parts = [];
    var low = schema.minimum !== undefined ? schema.minimum : schema.minItems;
    var high = schema.maximum !== undefined ? schema.maximum : schema.maxItems;
    if (low !== undefined && high !== undefined) parts.push(low + "–" + high + (schema.maxItems !== undefined ? " items" : ""));
    else if (low !== undefined) parts.push("≥ " + low);
    else if (high !== undefined) parts.push("≤ " + high);
    if (schema.maxLength !== undefined && schema.maxLength > 0) parts.push("≤ " + schema.maxLength + " characters");
    if (schema.default !== undefined) parts.push("default " + schema.default);
    return parts.length ? " [" + parts.join(", ") + "]" : "";
  }
  function typeCell(schema) {
    var text = typeOf(schema);
    var ref = schema && (schema.$ref || (schema.items && schema.items.$ref));
    if (!ref) return el("td", { text: text });
    return el("td", {}, [el("a", { href: "#schema-" + refName(ref), text: text })]);
  }
  function table(caption, headings, rows) {
    return el("table", { class: "api-table" }, [
      el("caption", { text: caption }),
      el("thead", {}, [el("tr", {}, headings.map(function (h) { return el("th", { scope: "col", text: h }); }))]),
      el("tbody", {}, rows),
    ]);
  }

  fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
    .then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.json();
    })
    .then(function (schema) {
      status.textContent = schema.info.title + " " + schema.info.version + " — " + Object.keys(schema.paths).length + " paths.";
      var toc = el("ul", {});
      var endpoints = document.getElementById("api-endpoints");
      Object.keys(schema.paths).forEach(function (path) {
        Object.keys(schema.paths[path]).forEach(function (method) {
          var op = schema.paths[path][method];
          if (typeof op !== "object" || !op.operationId) return;
          var id = "op-" + op.operationId;
          toc.appendChild(el("li", {}, [el("a", { href: "#" + id }, [
            el("span", { class: "http-method m-" + method, text: method.toUpperCase() }), el("code", { text: path }),
          ])]));
          var section = el("section", { class: "api-op", id: id }, [
            el("h2", {}, [el("span", { class: "http-method m-" + method, text: method.toUpperCase() }), el("code", { text: path })]),
          ]);
          if (op.description || op.summary) section.appendChild(el("p", { text: op.description || op.summary }));
          var params = (op.parameters || []).map(function (p) {
            return el("tr", {}, [
              el("td", {}, [el("code", { text: p.name })]),
              el("td", { text: p.in + (p.required ? ", required" : "") }),
              typeCell(p.schema),
              el("td", { text: p.description || "" }),
            ]);
          });
          if (params.length) section.appendChild(table("Parameters", ["Name", "In", "Type", "Description"], params));
          var body = op.requestBody && op.requestBody.content;
          if (body) {
            var kinds = Object.keys(body);
            var bodySchema = body[kinds[0]].schema;
            section.appendChild(el("p", {}, [el("strong", { text: "Request body: " }),
              document.createTextNode(kinds.join(", ") + " → "),
              bodySchema.$ref ? el("a", { href: "#schema-" + refName(bodySchema.$ref), text: typeOf(bodySchema) })
                : document.createTextNode(typeOf(bodySchema))]));
          }
          var responses = Object.keys(op.responses || {}).map(function (code) {
            var content = op.responses[code].content;
            var first = content && content[Object.keys(content)[0]];
            return el("tr", {}, [el("td", { text: code }), first ? typeCell(first.schema) : el("td", { text: "" }),
              el("td", { text: op.responses[code].description || "" })]);
          });
          if (responses.length) section.appendChild(table("Responses", ["Status", "Body", "Description"], responses));
          endpoints.appendChild(section);
        });
      });
      document.getElementById("api-toc").appendChild(toc);
      var schemas = document.getElementById("api-schemas");
      var components = (schema.components && schema.components.schemas) || {};
      Object.keys(components).sort().forEach(function (name) {
        var component = components[name];
        var section = el("section", { class: "api-schema", id: "schema-" + name }, [el("h3", {}, [el("code", { text: name })])]);
        if (component.description) section.appendChild(el("p", { text: component.description }));
        var required = component.required || [];
        var rows = Object.keys(component.properties || {}).map(function (prop) {
          var p = component.properties[prop];
          return el("tr", {}, [
            el("td", {}, [el("code", { text: prop })]),
            typeCell(p),
            el("td", { text: (required.indexOf(prop) >= 0 ? "required" : "") + (p.readOnly ? " read-only" : "") }),
            el("td", { text: p.description || "" }),
          ]);
        });
        if (rows.length) section.appendChild(table("Fields of " + name, ["Field", "Type", "", "Description"], rows));
        else section.appendChild(el("p", { class: "hint", text: typeOf(component) }));
        schemas.appendChild(section);
      });
    })
    .catch(function (error) {
      status.textContent = "The schema could not be loaded (" + error.message + "); use the links above.";
    });
})();
