/**
 * `app_path` names an executable of the machine the service runs on, so "absolute" is that platform's
 * notion (C:\... on Windows, /... on Linux), and the 400 says which platform it checked for: a Windows
 * path sent to a Linux service (the reference's own example) is otherwise a puzzle.
 */
import path from 'node:path';

export function isAbsoluteAppPath(value: string, platform: NodeJS.Platform = process.platform): boolean {
  const flavour = platform === 'win32' ? path.win32 : path.posix;
  return flavour.isAbsolute(value) && !value.includes('\0');
}

/** "an absolute Linux path", for 400 messages. */
export function absolutePathKind(platform: NodeJS.Platform = process.platform): string {
  return `an absolute ${platform === 'win32' ? 'Windows' : platform === 'linux' ? 'Linux' : platform} path`;
}
