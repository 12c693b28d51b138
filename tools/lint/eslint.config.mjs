// ESLint for famfs-csi: typescript-eslint's type-aware recommended rules over every TypeScript file
// the project compiles (tsconfig.json). Run from the repository root: npm run lint.
import js from '@eslint/js';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import tseslint from 'typescript-eslint';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'tools/**', '.cache/**', 'build/**', 'native/**', 'charts/**', 'examples/**', '**/*.js', '**/*.mjs', '**/*.cjs'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: { project: path.join(root, 'tsconfig.json'), tsconfigRootDir: root },
    },
    rules: {
      // Unused catch bindings and `_`-prefixed parameters are deliberate.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // An async function without await is how an interface that returns a promise is met here, and
      // it turns a throw into a rejection; dropping `async` would change that, so the rule is off.
      '@typescript-eslint/require-await': 'off',
    },
  },
);
