// This program's name and version: written into every manifest, shown by `--version` and in the
// daemon's build_info metric. Kept equal to package.json's version (a unit test checks).

/** The release, as in package.json. */
export const VERSION = '0.1.0';

/** Name and version, e.g. "deis-backup 0.1.0". */
export const TOOL = `deis-backup ${VERSION}`;
