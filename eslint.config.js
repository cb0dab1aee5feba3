// `make lint` runs this over static/ (eslint, pinned in package.json): the
// recommended rules, among them no-undef, which catches a name used but never
// imported, and no-empty, which refuses an empty catch.
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
  },
];
