// Signers against the worked examples of the AWS S3 documentation (SigV2 REST authentication, SigV4 ListObjects).
import { describe, expect, it } from 'vitest';
import { authorizationV2, stringToSignV2 } from '../../../src/s3/sign-v2.js';
import { encodeRfc3986, EMPTY_SHA256, signV4 } from '../../../src/s3/sign-v4.js';

const ACCESS = 'AKIAIOSFODNN7EXAMPLE';
const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';

describe('signature v2', () => {
  it('signs the documented GET object example', () => {
    const req = {
      method: 'GET',
      path: '/awsexamplebucket1/photos/puppy.jpg',
      query: new URLSearchParams(),
      headers: { Date: 'Tue, 27 Mar 2007 19:36:42 +0000' },
    };
    expect(stringToSignV2(req)).toBe(
      'GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n/awsexamplebucket1/photos/puppy.jpg',
    );
    expect(authorizationV2(req, ACCESS, SECRET)).toBe(`AWS ${ACCESS}:qgk2+6Sv9/oM7G3qLEjTH1a1l1g=`);
  });

  it('signs the documented PUT example with its content-type', () => {
    const req = {
      method: 'PUT',
      path: '/awsexamplebucket1/photos/puppy.jpg',
      query: new URLSearchParams(),
      headers: { 'Content-Type': 'image/jpeg', Date: 'Tue, 27 Mar 2007 21:15:45 +0000' },
    };
    expect(authorizationV2(req, ACCESS, SECRET)).toBe(`AWS ${ACCESS}:iqRzw+ileNPu1fhspnRs8nOjjIA=`);
  });

  it('leaves listing parameters out of the signed resource', () => {
    const req = {
      method: 'GET',
      path: '/awsexamplebucket1/',
      query: new URLSearchParams('prefix=photos&max-keys=50&marker=puppy'),
      headers: { Date: 'Tue, 27 Mar 2007 19:42:41 +0000' },
    };
    expect(authorizationV2(req, ACCESS, SECRET)).toBe(`AWS ${ACCESS}:m0WP8eCtspQl5Ahe6L1SozdX9YA=`);
  });

  it('signs sub-resources sorted, and x-amz headers lowercased and sorted', () => {
    const req = {
      method: 'PUT',
      path: '/db_wal/key',
      query: new URLSearchParams({ uploadId: 'u1', partNumber: '2', 'max-keys': '5' }),
      headers: { Date: 'D', 'X-Amz-Meta-B': ' two ', 'x-amz-meta-a': 'one' },
    };
    expect(stringToSignV2(req)).toBe(
      'PUT\n\n\nD\nx-amz-meta-a:one\nx-amz-meta-b:two\n/db_wal/key?partNumber=2&uploadId=u1',
    );
  });

  it('uses an empty Date line when x-amz-date is sent', () => {
    const req = {
      method: 'GET',
      path: '/b/k',
      query: new URLSearchParams('uploads'),
      headers: { 'x-amz-date': 'X', Date: 'D' },
    };
    expect(stringToSignV2(req)).toBe('GET\n\n\n\nx-amz-date:X\n/b/k?uploads');
  });
});

describe('signature v4', () => {
  it('signs the documented ListObjects example', () => {
    const { authorization: auth } = signV4(
      {
        method: 'GET',
        path: '/',
        query: new URLSearchParams('max-keys=2&prefix=J'),
        headers: {
          host: 'examplebucket.s3.amazonaws.com',
          'x-amz-date': '20130524T000000Z',
          'x-amz-content-sha256': EMPTY_SHA256,
        },
      },
      { accessKey: ACCESS, secretKey: SECRET, region: 'us-east-1' },
    );
    expect(auth).toBe(
      `AWS4-HMAC-SHA256 Credential=${ACCESS}/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7`,
    );
  });

  it('encodes as RFC 3986 wants', () => {
    expect(encodeRfc3986("a b+c%d?e#f!'()*~/é")).toBe('a%20b%2Bc%25d%3Fe%23f%21%27%28%29%2A~%2F%C3%A9');
    expect(encodeRfc3986('a/b c', true)).toBe('a/b%20c');
  });
});
