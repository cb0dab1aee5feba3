// `make lint` runs this over static/ (eslint, pinned in package.json): the
// recommended rules, among them no-undef, which catches a name used but never
// imported, and no-empty, which refuses an empty catch. A catch can hide a bug
// (a missing import was once hidden by one), so none is allowed but the one
// in live.js request(), which catches only a request that got no answer.
import js from "@eslint/js";
import globals from "globals";

export default [
  js.configs.recommended,
  {
    files: ["static/**/*.js"],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "module",
      globals: globals.browser,
    },
    rules: {
      "no-restricted-syntax": [
        "error",
        {
          selector: "CatchClause",
          message: "Do not catch here: use request() (live.js) for a request that may get no answer; let every other error surface.",
        },
        {
          selector: "CallExpression[callee.property.name='catch']",
          message: "Do not catch here: use request() (live.js) for a request that may get no answer; let every other error surface.",
        },
      ],
    },
  },
];
