// docker-registry v1's image folders and tags, read from a bucket's keys and its tags' bodies: an
// image caught mid-push when the bucket was copied (its `_inprogress` mark, or its json, layer or
// ancestry not there yet) comes back from a restore as one the registry will not serve; a tag
// copied after an image pushed while the copy ran names an image the copy lacks.
import { forEachLimited } from '../concurrency.js';
import { describeError } from '../errors.js';
import type { Target } from '../targets/target.js';

const IMAGE_FILE = /^registry\/images\/([0-9a-f]{64})\/(json|layer|ancestry|_inprogress)$/;
const NEEDED = ['json', 'layer', 'ancestry'] as const;
/** A tag's file: its body is the image id (`tag<name>_json` beside it is the tag's metadata). */
const TAG_FILE = /^registry\/repositories\/(.+)\/tag_([^/]+)$/;
/** The most bytes a tag's body has (an image id, perhaps with a newline). */
export const TAG_BODY_MAX = 128;

/** True for a key that may be a tag's file with an image id in it, of `size` bytes. */
export function isTagFile(key: string, size: number): boolean {
  return size <= TAG_BODY_MAX && TAG_FILE.test(key);
}

/** Gathers the image files among a bucket's keys, one key at a time, and says what is amiss. */
export class RegistryImages {
  /** Image id → which of its files were seen. */
  private readonly images = new Map<string, Set<string>>();
  /** `<repository>:<tag>` → the image id its file names. */
  private readonly tags = new Map<string, string>();
  /** Tag files that could not be read, and why the first could not. */
  private unreadTags = 0;
  private unreadReason: string | undefined;

  /** Notes `key` if it is one of an image's files; other keys are ignored. */
  add(key: string): void {
    const match = IMAGE_FILE.exec(key);
    if (match?.[1] === undefined || match[2] === undefined) return;
    let files = this.images.get(match[1]);
    if (files === undefined) {
      files = new Set();
      this.images.set(match[1], files);
    }
    files.add(match[2]);
  }

  /**
   * Notes the image a tag's file names (its body, read by the caller for keys isTagFile accepts). A
   * body that is no image id (a tag's metadata whose name looks like a tag's file) is ignored.
   */
  addTag(key: string, body: string): void {
    const match = TAG_FILE.exec(key);
    const id = body.trim();
    if (match?.[1] === undefined || match[2] === undefined || !/^[0-9a-f]{64}$/.test(id)) return;
    this.tags.set(`${match[1]}:${match[2]}`, id);
  }

  /** Notes a tag file that could not be read, so the image it names is not checked. */
  tagUnread(key: string, reason: string): void {
    this.unreadTags++;
    this.unreadReason ??= `${key}: ${reason}`;
  }

  /**
   * One finding per image that was mid-push or lacks a file, in id order, then one per tag that
   * names an image the bucket lacks, in tag order, and one for tag files that could not be read;
   * none for other buckets. (A tag whose image is there but not all of its parents is not found:
   * that needs each image's ancestry read.)
   */
  findings(): string[] {
    const found: string[] = [];
    for (const id of [...this.images.keys()].sort()) {
      const files = this.images.get(id) ?? new Set();
      const missing = NEEDED.filter((file) => !files.has(file));
      if (files.has('_inprogress'))
        found.push(
          `image ${id} was being pushed when the bucket was copied (registry/images/${id}/_inprogress): restored, the registry will not serve it until its app is built again`,
        );
      else if (missing.length > 0)
        found.push(
          `image ${id} lacks its ${missing.join(', ')}: a release that names it cannot be pulled after a restore`,
        );
    }
    for (const tag of [...this.tags.keys()].sort()) {
      const id = this.tags.get(tag) ?? '';
      if (!this.images.has(id))
        found.push(
          `tag ${tag} names image ${id}, which the bucket lacks: after a restore that tag cannot be pulled (an image pushed while the bucket was copied can be missed, and its tag, copied later, not)`,
        );
    }
    if (this.unreadTags > 0)
      found.push(
        `${this.unreadTags} tag file(s) could not be read, so the images they name were not checked (first: ${this.unreadReason ?? ''})`,
      );
    return found;
  }
}

/**
 * Reads the bodies of the tags' files among `tags` (keys isTagFile accepted, with their blobs) from
 * the target, a few at a time, into `images`; one that cannot be read is noted as such.
 */
export async function readTags(
  images: RegistryImages,
  target: Pick<Target, 'get'>,
  tags: readonly { key: string; blob: string }[],
  opts: { signal: AbortSignal },
): Promise<void> {
  await forEachLimited(tags, 8, async ({ key, blob }) => {
    try {
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of await target.get(blob, opts)) {
        chunks.push(chunk as Buffer);
        size += (chunk as Buffer).length;
        if (size > TAG_BODY_MAX) break;
      }
      images.addTag(key, Buffer.concat(chunks).toString('utf8'));
    } catch (err) {
      opts.signal.throwIfAborted();
      images.tagUnread(key, describeError(err));
    }
  });
}
