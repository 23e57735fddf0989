// Writes the JSON schemas zod, the AI SDK and the openai zod helper produce for a few models:
// tests/fixtures/zod_schemas.json (used by tests/test_schema_instance.py). Run: node dump-schemas.mjs
import { writeFileSync } from 'node:fs';
import { z } from 'zod';
import { zodSchema } from 'ai';
import { zodResponseFormat } from 'openai/helpers/zod';

const Address = z.object({ street: z.string(), zip: z.string().regex(/^\d{5}$/), country: z.enum(['FR', 'DE']).default('FR') });
const Person = z.object({
  name: z.string().min(2).max(40),
  age: z.number().int().min(0).max(150),
  email: z.email(),
  born: z.iso.date(),
  score: z.number().gt(0).lt(1),
  tags: z.array(z.string()).min(1).max(3),
  address: Address.nullable(),
  role: z.union([z.literal('admin'), z.literal('user')]),
  pet: z.discriminatedUnion('kind', [
    z.object({ kind: z.literal('cat'), lives: z.number() }),
    z.object({ kind: z.literal('dog'), good: z.boolean() }),
  ]),
  nick: z.string().optional(),
  meta: z.record(z.string(), z.number()),
  pair: z.tuple([z.string(), z.number()]),
  id: z.uuid(),
});
const Tree = z.object({ name: z.string(), get children() { return z.array(Tree); } });
const schemas = {
  zod_toJSONSchema: z.toJSONSchema(Person),
  ai_sdk_zodSchema: zodSchema(Person).jsonSchema,
  ai_sdk_recursive: zodSchema(Tree).jsonSchema,
  openai_zodResponseFormat: zodResponseFormat(
    z.object({ name: z.string(), age: z.number().int(), address: Address.nullable(), tags: z.array(z.enum(['a', 'b'])) }),
    'person',
  ).json_schema.schema,
};
writeFileSync(new URL('../../fixtures/zod_schemas.json', import.meta.url), JSON.stringify(schemas, null, 1) + '\n');
