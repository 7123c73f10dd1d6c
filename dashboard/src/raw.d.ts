// Vite's `?raw` imports: the file's text (vitest uses them to read committed files).
declare module "*?raw" {
  const text: string;
  export default text;
}
