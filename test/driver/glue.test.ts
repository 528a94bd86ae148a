/**
 * Checks of the Windows driver's build inputs that can run on Linux (no WDK here): the INF's install and
 * uninstall wiring, and the Visual Studio project's source list. The driver itself is compiled by
 * .github/workflows/windows.yml; this catches the mistakes that would only show up there (or at install).
 */
import { execFile } from 'node:child_process';
import { access, readFile, readdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';

// dist/test/driver/glue.test.js -> the repository root
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const driverDir = join(repoRoot, 'driver');

const onCI = process.env.CI === 'true';
const MINGW_CC = 'x86_64-w64-mingw32-gcc';
// Debian installs mingw's kernel headers (ntddk.h, wdm.h) here; other distributions under the sysroot.
const DDK_INCLUDE_CANDIDATES = ['/usr/share/mingw-w64/include/ddk', '/usr/x86_64-w64-mingw32/include/ddk'];

const WFP_CALLOUTS_CLASS_GUID = '{57465043-616C-6C6F-7574-5F636C617373}';

/** An INF as sections of "key = value" lines (comments and blank lines dropped; keys as written). */
type Inf = Map<string, string[]>;

function parseInf(text: string): Inf {
  const sections: Inf = new Map();
  let current: string[] | undefined;
  for (const rawLine of text.split(/\r?\n/)) {
    // A ';' outside quotes starts a comment.
    let line = '';
    let quoted = false;
    for (const ch of rawLine) {
      if (ch === '"') quoted = !quoted;
      if (ch === ';' && !quoted) break;
      line += ch;
    }
    line = line.trim();
    if (line === '') continue;
    const header = /^\[([^\]]+)\]$/.exec(line);
    if (header) {
      const name = header[1]!.trim().toLowerCase();
      assert.ok(!sections.has(name), `section [${name}] appears twice`);
      current = [];
      sections.set(name, current);
      continue;
    }
    assert.ok(current, `line outside any section: ${line}`);
    current.push(line);
  }
  return sections;
}

function entries(inf: Inf, section: string): Array<[string, string]> {
  const lines = inf.get(section.toLowerCase());
  assert.ok(lines, `section [${section}] is missing`);
  return lines.map((line) => {
    const eq = line.indexOf('=');
    return eq < 0 ? [line, ''] : [line.slice(0, eq).trim(), line.slice(eq + 1).trim()];
  });
}

function value(inf: Inf, section: string, key: string): string {
  const found = entries(inf, section).filter(([k]) => k.toLowerCase() === key.toLowerCase());
  assert.equal(found.length, 1, `[${section}] must set ${key} exactly once`);
  return found[0]![1];
}

/** Replaces %Name% with its [Strings] value (quotes removed). */
function expand(inf: Inf, text: string): string {
  const strings = new Map(entries(inf, 'Strings').map(([k, v]) => [k.toLowerCase(), v.replace(/^"|"$/g, '')]));
  return text.replace(/%([A-Za-z_][A-Za-z0-9_]*)%/g, (_m, name: string) => {
    const found = strings.get(name.toLowerCase());
    assert.ok(found !== undefined, `%${name}% has no [Strings] entry`);
    return found;
  });
}

async function loadInf(): Promise<Inf> {
  return parseInf(await readFile(join(driverDir, 'netclamp.inf'), 'utf8'));
}

async function loadProject(): Promise<string> {
  return readFile(join(driverDir, 'netclamp.vcxproj'), 'utf8');
}

function projectTargetName(project: string): string {
  const names = [...project.matchAll(/<TargetName>([^<]+)<\/TargetName>/g)].map((m) => m[1]!.trim());
  assert.ok(names.length >= 1, 'the vcxproj sets no TargetName');
  assert.equal(new Set(names).size, 1, `the vcxproj sets conflicting TargetNames: ${names.join(', ')}`);
  return names[0]!;
}

function run(command: string, args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolvePromise) => {
    execFile(command, args, { cwd: repoRoot, maxBuffer: 8 * 1024 * 1024, timeout: 120_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
      resolvePromise({ code, output: `${stdout}${stderr}` });
    });
  });
}

async function firstExisting(paths: string[]): Promise<string | undefined> {
  for (const path of paths) {
    try {
      await access(path);
      return path;
    } catch {
      // try the next one
    }
  }
  return undefined;
}

/** mingw-w64 is a build dependency here (pretest installs it); off CI its absence skips, on CI it fails. */
function skipOrFail(t: TestContext, reason: string): void {
  if (onCI) throw new Error(`${reason}, and CI=true forbids skipping`);
  t.skip(reason);
}

describe('driver glue C sources', () => {
  // mingw's real ntddk.h plus driver/src/wdk_stub_check.h (hand-written declarations of the WDF, NDIS 6 and
  // FWPS names the glue uses). Catches C errors, typos and wrong call shapes here; the WDK build on the
  // Windows runner remains the authority on the real headers.
  test('pass a syntax check against ntddk.h and the WDK stub declarations, warnings as errors', async (t) => {
    const compilerFound = (await run('sh', ['-c', `command -v ${MINGW_CC}`])).code === 0;
    const ddkInclude = await firstExisting(DDK_INCLUDE_CANDIDATES);
    if (!compilerFound || ddkInclude === undefined) {
      skipOrFail(t, `needs ${MINGW_CC} and mingw's ddk headers (apt-get install mingw-w64)`);
      return;
    }
    const sources = (await readdir(join(driverDir, 'src'))).filter((name) => name.endsWith('.c')).sort();
    assert.ok(sources.length >= 3, `expected the glue sources, found ${sources.join(', ')}`);
    for (const source of sources) {
      const result = await run(MINGW_CC, [
        '-std=gnu11', '-fsyntax-only', '-Wall', '-Wextra', '-Werror',
        '-Wno-multichar', // pool tags are four-character constants, as WDK code writes them
        '-Wno-unused-parameter', // WFP callback signatures are fixed
        '-DNETCLAMP_WDK_STUB_CHECK', `-I${ddkInclude}`,
        join('driver', 'src', source),
      ]);
      assert.equal(result.code, 0, `driver/src/${source} fails the syntax check:\n${result.output}`);
    }
  });
});

describe('driver INF', () => {
  test('is a WFP callout class INF with a catalog', async () => {
    const inf = await loadInf();
    assert.equal(value(inf, 'Version', 'Signature'), '"$WINDOWS NT$"');
    assert.equal(value(inf, 'Version', 'Class'), 'WFPCALLOUTS');
    assert.equal(value(inf, 'Version', 'ClassGuid').toUpperCase(), WFP_CALLOUTS_CLASS_GUID.toUpperCase());
    assert.equal(value(inf, 'Version', 'CatalogFile'), 'netclamp.cat');
    assert.match(value(inf, 'Version', 'DriverVer'), /^\d{2}\/\d{2}\/\d{4},\d+\.\d+\.\d+\.\d+$/);
  });

  test('installs and uninstalls the same kernel-driver service for every architecture it lists', async () => {
    const inf = await loadInf();
    const project = await loadProject();
    const binary = `${projectTargetName(project)}.sys`.toLowerCase();
    const installSections = [...inf.keys()].filter((s) => /^defaultinstall\.nt[a-z0-9]+$/.test(s));
    assert.ok(installSections.length >= 1, 'no [DefaultInstall.NT<arch>] section');
    for (const install of installSections) {
      const arch = install.slice('defaultinstall'.length);
      // Every platform the project builds must have an install section, and vice versa (checked below).
      const addService = entries(inf, `${install}.Services`).filter(([k]) => k.toLowerCase() === 'addservice');
      assert.equal(addService.length, 1, `[${install}.Services] needs one AddService`);
      const [serviceName, , serviceSection] = addService[0]![1].split(',').map((s) => s.trim());
      const delService = entries(inf, `DefaultUninstall${arch}.Services`).filter(
        ([k]) => k.toLowerCase() === 'delservice',
      );
      assert.equal(delService.length, 1, `[DefaultUninstall${arch}.Services] needs one DelService`);
      assert.equal(
        expand(inf, delService[0]![1].split(',')[0]!.trim()),
        expand(inf, serviceName!),
        'DelService removes a different service than AddService adds',
      );
      assert.ok(serviceSection, 'AddService names no service-install section');
      assert.equal(value(inf, serviceSection, 'ServiceType'), '1', 'not SERVICE_KERNEL_DRIVER');
      assert.ok(['2', '3'].includes(value(inf, serviceSection, 'StartType')), 'start type must be auto or demand');
      const serviceBinary = value(inf, serviceSection, 'ServiceBinary');
      assert.equal(serviceBinary.split('\\').pop()!.toLowerCase(), binary, 'ServiceBinary is not the project output');
      // The binary must be copied to where ServiceBinary points (dirid 12 or 13, by DestinationDirs).
      const dirid = /^%(\d+)%\\/.exec(serviceBinary)?.[1];
      assert.ok(dirid === '12' || dirid === '13', `ServiceBinary must live under %12% or %13%, not ${serviceBinary}`);
      const copyFiles = value(inf, install, 'CopyFiles').split(',').map((s) => s.trim());
      const copied = copyFiles.flatMap((section) => {
        const dest = entries(inf, 'DestinationDirs').find(([k]) => k.toLowerCase() === section.toLowerCase());
        const destDir = (dest ?? entries(inf, 'DestinationDirs').find(([k]) => k === 'DefaultDestDir'))?.[1];
        return entries(inf, section).map(([line]) => ({ file: line.split(',')[0]!.trim().toLowerCase(), destDir }));
      });
      assert.ok(
        copied.some((c) => c.file === binary && c.destDir === dirid),
        `${binary} is not copied to dirid ${dirid}, where ServiceBinary points`,
      );
    }
    const platforms = new Set([...project.matchAll(/<Platform>([^<]+)<\/Platform>/g)].map((m) => m[1]!.toLowerCase()));
    for (const platform of platforms) {
      const arch = platform === 'x64' ? 'ntamd64' : `nt${platform}`;
      assert.ok(installSections.includes(`defaultinstall.${arch}`), `the project builds ${platform}, the INF cannot install it`);
    }
  });

  test('every file it copies is in [SourceDisksFiles] on a disk [SourceDisksNames] declares', async () => {
    const inf = await loadInf();
    const disks = new Set(entries(inf, 'SourceDisksNames').map(([k]) => k));
    const sourceFiles = new Map(entries(inf, 'SourceDisksFiles').map(([k, v]) => [k.toLowerCase(), v.split(',')[0]!.trim()]));
    assert.ok(sourceFiles.size >= 1, '[SourceDisksFiles] is empty');
    for (const [file, disk] of sourceFiles) {
      assert.ok(disks.has(disk), `${file} is on disk ${disk}, which [SourceDisksNames] does not declare`);
    }
    const copySections = new Set<string>();
    for (const [section, lines] of inf) {
      if (!/^defaultinstall\.nt[a-z0-9]+$/.test(section)) continue;
      for (const line of lines) {
        const m = /^CopyFiles\s*=\s*(.+)$/i.exec(line);
        if (m) m[1]!.split(',').forEach((s) => copySections.add(s.trim()));
      }
    }
    const copied = new Set([...copySections].flatMap((s) => entries(inf, s).map(([l]) => l.split(',')[0]!.trim().toLowerCase())));
    for (const file of copied) assert.ok(sourceFiles.has(file), `${file} is copied but not in [SourceDisksFiles]`);
    for (const file of sourceFiles.keys()) assert.ok(copied.has(file), `${file} is in [SourceDisksFiles] but never copied`);
  });
});

describe('driver Visual Studio project', () => {
  test('compiles every driver/src and driver/core C file, and nothing that does not exist', async () => {
    const project = await loadProject();
    const listed = new Set(
      [...project.matchAll(/<ClCompile\s+Include="([^"]+)"/g)].map((m) => m[1]!.replace(/\\/g, '/')),
    );
    const onDisk = new Set<string>();
    for (const folder of ['src', 'core']) {
      for (const name of await readdir(join(driverDir, folder))) {
        if (name.endsWith('.c')) onDisk.add(`${folder}/${name}`);
      }
    }
    assert.ok(onDisk.size >= 8, `expected the glue and core sources, found ${[...onDisk].join(', ')}`);
    for (const file of onDisk) assert.ok(listed.has(file), `${file} is not compiled by netclamp.vcxproj`);
    for (const file of listed) assert.ok(onDisk.has(file), `netclamp.vcxproj compiles ${file}, which does not exist`);
  });

  test('is a KMDF 1.15 kernel driver linking the WFP, NDIS and uuid libraries', async () => {
    const project = await loadProject();
    const configs = [...project.matchAll(/<ProjectConfiguration Include="([^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual(new Set(configs), new Set(['Debug|x64', 'Debug|ARM64', 'Release|x64', 'Release|ARM64']));
    const groups = [...project.matchAll(/<PropertyGroup Condition="[^"]*" Label="Configuration">([\s\S]*?)<\/PropertyGroup>/g)];
    assert.equal(groups.length, configs.length, 'one configuration property group per configuration');
    for (const [, body] of groups) {
      assert.match(body!, /<PlatformToolset>WindowsKernelModeDriver10\.0<\/PlatformToolset>/);
      assert.match(body!, /<DriverType>KMDF<\/DriverType>/);
      assert.match(body!, /<KMDF_VERSION_MAJOR>1<\/KMDF_VERSION_MAJOR>/);
      assert.match(body!, /<KMDF_VERSION_MINOR>15<\/KMDF_VERSION_MINOR>/);
      assert.match(body!, /<ConfigurationType>Driver<\/ConfigurationType>/);
    }
    const libs = /<AdditionalDependencies>([^<]+)<\/AdditionalDependencies>/.exec(project)?.[1] ?? '';
    for (const lib of ['fwpkclnt.lib', 'ndis.lib', 'uuid.lib']) assert.ok(libs.includes(lib), `does not link ${lib}`);
    assert.match(project, /<Inf Include="netclamp\.inf"\s*\/>/);
    const includes = /<AdditionalIncludeDirectories>([^<]+)</.exec(project)?.[1] ?? '';
    assert.ok(includes.includes('include'), 'driver/include is not on the include path');
  });
});
