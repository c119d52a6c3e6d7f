// The 9-digit session code a visitor reads to an agent ("845 800 826").
// Pure functions, no DOM: the SDK shows codes, the console reads them.

export const CODE_DIGITS = 9;

/** "845800826" -> "845 800 826". Anything but 9 digits is returned trimmed, as it is. */
export function formatCode(token) {
  const s = String(token == null ? '' : token).trim();
  if (!/^\d{9}$/.test(s)) return s;
  return `${s.slice(0, 3)} ${s.slice(3, 6)} ${s.slice(6)}`;
}

/**
 * What an agent typed -> the 9 digits, or '' when it is not a code. Spaces,
 * dashes and dots between digits are allowed ("845 800 826", "845-800-826").
 */
export function parseCode(text) {
  const s = String(text == null ? '' : text).trim();
  if (!/^[\d\s.-]*$/.test(s)) return '';
  const digits = s.replace(/\D/g, '');
  return digits.length === CODE_DIGITS ? digits : '';
}

/** The line the SDK shows the visitor. */
export function codeLine(token) {
  return `Your code: ${formatCode(token)} — read it to your agent`;
}
