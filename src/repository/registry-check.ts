// docker-registry v1's image folders and tags, read from a bucket's keys and a few small bodies: an
// image caught mid-push when the bucket was copied (its `_inprogress` mark, or its json, layer or
// ancestry not there yet) comes back from a restore as one the registry will not serve; a tag
// copied after an image pushed while the copy ran can name an image, or an image with a parent,
// that the copy lacks.
import { forEachLimited } from '../concurrency.js';
import { describeError } from '../errors.js';
import type { Target } from '../targets/target.js';

const IMAGE_FILE = /^registry\/images\/([0-9a-f]{64})\/(json|layer|ancestry|_inprogress)$/;
const NEEDED = ['json', 'layer', 'ancestry'] as const;
const IMAGE_ID = /^[0-9a-f]{64}$/;
/** A tag's file: its body is the image id (`tag<name>_json` beside it is the tag's metadata). */
const TAG_FILE = /^registry\/repositories\/(.+)\/tag_([^/]+)$/;
/** The most bytes a tag's body has (an image id, perhaps with a newline). */
export const TAG_BODY_MAX = 128;
/** The most bytes of an ancestry file read: 127 layers' ids take about 8.5 KB. */
const ANCESTRY_MAX = 64 * 1024;

/** True for a key that may be a tag's file with an image id in it, of `size` bytes. */
export function isTagFile(key: string, size: number): boolean {
  return size <= TAG_BODY_MAX && TAG_FILE.test(key);
}

/** A small file to read: its key in the bucket and its blob in the target. */
export interface SmallFile {
  key: string;
  blob: string;
}

/** Gathers the image files among a bucket's keys, one key at a time, and says what is amiss. */
export class RegistryImages {
  /** Image id → which of its files were seen. */
  private readonly images = new Map<string, Set<string>>();
  /** Image id → the blob of its ancestry file, when the caller gave it. */
  private readonly ancestryBlobs = new Map<string, string>();
  /** `<repository>:<tag>` → the image id its file names. */
  private readonly tags = new Map<string, string>();
  /** Image id → the first image of its ancestry that the bucket lacks. */
  private readonly missingParents = new Map<string, string>();
  /** Small files that could not be read, and why the first could not. */
  private unreadFiles = 0;
  private unreadReason: string | undefined;

  /** Notes `key` if it is one of an image's files (with its blob, to read its ancestry later). */
  add(key: string, blob?: string): void {
    const match = IMAGE_FILE.exec(key);
    if (match?.[1] === undefined || match[2] === undefined) return;
    let files = this.images.get(match[1]);
    if (files === undefined) {
      files = new Set();
      this.images.set(match[1], files);
    }
    files.add(match[2]);
    if (match[2] === 'ancestry' && blob !== undefined) this.ancestryBlobs.set(match[1], blob);
  }

  /**
   * Notes the image a tag's file names (its body, read by the caller for keys isTagFile accepts). A
   * body that is no image id (a tag's metadata whose name looks like a tag's file) is ignored.
   */
  addTag(key: string, body: string): void {
    const match = TAG_FILE.exec(key);
    const id = body.trim();
    if (match?.[1] === undefined || match[2] === undefined || !IMAGE_ID.test(id)) return;
    this.tags.set(`${match[1]}:${match[2]}`, id);
  }

  /** The ancestry files of the images the tags name, once each, for addAncestry. */
  taggedAncestries(): SmallFile[] {
    const ids = new Set(this.tags.values());
    return [...ids].flatMap((id) => {
      const blob = this.ancestryBlobs.get(id);
      return blob === undefined ? [] : [{ key: `registry/images/${id}/ancestry`, blob }];
    });
  }

  /** Notes the first image of an ancestry file's list (the image itself first) that the bucket lacks. */
  addAncestry(key: string, body: string): void {
    const id = IMAGE_FILE.exec(key)?.[1];
    if (id === undefined) return;
    let list: unknown;
    try {
      list = JSON.parse(body);
    } catch {
      return;
    }
    if (!Array.isArray(list)) return;
    const missing = list.find(
      (parent): parent is string =>
        typeof parent === 'string' && IMAGE_ID.test(parent) && !this.images.has(parent),
    );
    if (missing !== undefined) this.missingParents.set(id, missing);
  }

  /** Notes a small file that could not be read, so what it names is not checked. */
  unread(key: string, reason: string): void {
    this.unreadFiles++;
    this.unreadReason ??= `${key}: ${reason}`;
  }

  /** imageFindings, then tagFindings. None for other buckets. */
  findings(): string[] {
    return [...this.imageFindings(), ...this.tagFindings()];
  }

  /** One finding per image that was mid-push or lacks a file, in id order. */
  imageFindings(): string[] {
    const found: string[] = [];
    for (const id of [...this.images.keys()].sort()) {
      const gap = gapOf(this.images.get(id) ?? new Set());
      if (gap === 'pushing')
        found.push(
          `image ${id} was being pushed when the bucket was copied (registry/images/${id}/_inprogress): restored, the registry will not serve it until its app is built again`,
        );
      else if (gap !== undefined)
        found.push(
          `image ${id} lacks its ${gap.join(', ')}: a release that names it cannot be pulled after a restore`,
        );
    }
    return found;
  }

  /**
   * One finding per tag that names an image the bucket lacks, or one with a parent it lacks, in tag
   * order; then one for small files that could not be read. With `partial`, also one per tag that
   * names an image caught mid-push or lacking a file, which imageFindings names without its tags.
   */
  tagFindings(opts: { partial?: boolean } = {}): string[] {
    const found: string[] = [];
    const why =
      'after a restore that tag cannot be pulled (an image pushed while the bucket was copied can be missed, and its tag, copied later, not)';
    for (const tag of [...this.tags.keys()].sort()) {
      const id = this.tags.get(tag) ?? '';
      const parent = this.missingParents.get(id);
      const files = this.images.get(id);
      const gap = files && opts.partial ? gapOf(files) : undefined;
      if (files === undefined) found.push(`tag ${tag} names image ${id}, which the bucket lacks: ${why}`);
      else if (gap !== undefined) {
        const part = gap === 'pushing' ? 'its push unfinished' : `without its ${gap.join(', ')}`;
        found.push(`tag ${tag} names image ${id}, which the bucket holds only partly (${part}): ${why}`);
      } else if (parent !== undefined)
        found.push(`tag ${tag} names image ${id}, whose parent ${parent} the bucket lacks: ${why}`);
    }
    if (this.unreadFiles > 0)
      found.push(
        `${this.unreadFiles} tag or ancestry file(s) could not be read, so the images they name were not checked (first: ${this.unreadReason ?? ''})`,
      );
    return found;
  }
}

/**
 * What keeps an image with these files from being served: 'pushing' for its `_inprogress` mark,
 * else the needed files it lacks; undefined when it is whole.
 */
function gapOf(files: ReadonlySet<string>): 'pushing' | (typeof NEEDED)[number][] | undefined {
  if (files.has('_inprogress')) return 'pushing';
  const missing = NEEDED.filter((file) => !files.has(file));
  return missing.length > 0 ? missing : undefined;
}

/**
 * Reads into `images` the bodies of the tags' files among `tags` (keys isTagFile accepted), then
 * the ancestry files of the images they name, from the target, 8 at a time. `cache` keeps the
 * bodies by blob across calls (a verify of several restore points reads each once). A file that
 * cannot be read is noted as such.
 */
export async function readTagged(
  images: RegistryImages,
  target: Pick<Target, 'get'>,
  tags: readonly SmallFile[],
  opts: { signal: AbortSignal; cache?: Map<string, string> },
): Promise<void> {
  const read = async (file: SmallFile, limit: number): Promise<string | undefined> => {
    const cached = opts.cache?.get(file.blob);
    if (cached !== undefined) return cached;
    try {
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of await target.get(file.blob, opts)) {
        chunks.push(chunk as Buffer);
        size += (chunk as Buffer).length;
        if (size > limit) {
          images.unread(file.key, `larger than ${limit} bytes`);
          return undefined;
        }
      }
      const body = Buffer.concat(chunks).toString('utf8');
      opts.cache?.set(file.blob, body);
      return body;
    } catch (err) {
      opts.signal.throwIfAborted();
      images.unread(file.key, describeError(err));
      return undefined;
    }
  };
  await forEachLimited(tags, 8, async (file) => {
    const body = await read(file, TAG_BODY_MAX);
    if (body !== undefined) images.addTag(file.key, body);
  });
  await forEachLimited(images.taggedAncestries(), 8, async (file) => {
    const body = await read(file, ANCESTRY_MAX);
    if (body !== undefined) images.addAncestry(file.key, body);
  });
}
