// What a user of each Node client library writes, unchanged but for the gateway's base URL and key.
// Run by tests/clients/test_node_clients.py: `node clients.mjs` with GATEWAY_BASE_URL, GATEWAY_KEY and
// GATEWAY_MODEL set; prints one JSON object: library -> check -> what the library handed back
// (or "error: <name>: <message>"). The checks and prompts are the Python programs' (programs.py).
import { ChatOpenAI } from '@langchain/openai';
import { HumanMessage } from '@langchain/core/messages';
import { tool as lcTool } from '@langchain/core/tools';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { createOpenAI } from '@ai-sdk/openai';
import { generateText, streamText, generateObject, tool, stepCountIs } from 'ai';
import OpenAI from 'openai';
import { zodFunction, zodResponseFormat } from 'openai/helpers/zod';
import { z } from 'zod';

const baseURL = process.env.GATEWAY_BASE_URL;
const apiKey = process.env.GATEWAY_KEY;
const model = process.env.GATEWAY_MODEL;
const CHAT = 'hello there';
const TOOL_PROMPT = 'Use get_weather for Paris';
const PERSON = 'Ann';
const Person = z.object({ name: z.string(), age: z.number().int() });
const City = z.object({ city: z.string() });
const weather = (city) => `sunny in ${city}`;

async function runChecks(checks) {
  const out = {};
  for (const [name, check] of Object.entries(checks)) {
    try {
      out[name] = await check();
    } catch (err) {
      out[name] = `error: ${err?.name}: ${String(err?.message).slice(0, 300)}`;
    }
  }
  return out;
}

function langchain() {
  const llm = new ChatOpenAI({ model, apiKey, configuration: { baseURL }, maxRetries: 0 });
  const getWeather = lcTool(async ({ city }) => weather(city), {
    name: 'get_weather',
    description: 'Current weather in a city',
    schema: City,
  });
  return runChecks({
    chat: async () => (await llm.invoke(CHAT)).content,
    stream: async () => {
      let text = '';
      for await (const chunk of await llm.stream(CHAT)) text += chunk.content;
      return text;
    },
    tools: async () => {
      const bound = llm.bindTools([getWeather]);
      const messages = [new HumanMessage(TOOL_PROMPT)];
      const answer = await bound.invoke(messages);
      if (!answer.tool_calls?.length) throw new Error('no tool call');
      messages.push(answer);
      for (const call of answer.tool_calls) messages.push(await getWeather.invoke(call)); // a ToolMessage with `name`
      return (await bound.invoke(messages)).content;
    },
    structured: async () => await llm.withStructuredOutput(Person).invoke(PERSON),
    structured_function_calling: async () =>
      await llm.withStructuredOutput(Person, { method: 'functionCalling' }).invoke(PERSON),
  });
}

function aiSdk(languageModel) {
  const tools = {
    get_weather: tool({
      description: 'Current weather in a city',
      inputSchema: City,
      execute: async ({ city }) => weather(city),
    }),
  };
  return runChecks({
    chat: async () => (await generateText({ model: languageModel, prompt: CHAT, maxRetries: 0 })).text,
    stream: async () => {
      let failure;
      const result = streamText({ model: languageModel, prompt: CHAT, maxRetries: 0, onError: ({ error }) => (failure = error) });
      let text = '';
      for await (const delta of result.textStream) text += delta;
      if (failure) throw failure;
      return text;
    },
    tools: async () => {
      const result = await generateText({
        model: languageModel,
        prompt: TOOL_PROMPT,
        tools,
        stopWhen: stepCountIs(3),
        maxRetries: 0,
      });
      if (result.steps.length < 2) throw new Error(`the loop stopped after ${result.steps.length} step(s)`);
      return result.text;
    },
    structured: async () =>
      (await generateObject({ model: languageModel, schema: Person, prompt: PERSON, maxRetries: 0 })).object,
  });
}

function openaiNode() {
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
  const getWeather = zodFunction({ name: 'get_weather', description: 'Current weather in a city', parameters: City });
  return runChecks({
    chat: async () =>
      (await client.chat.completions.create({ model, messages: [{ role: 'user', content: CHAT }] })).choices[0].message
        .content,
    stream: async () => {
      const runner = client.chat.completions.stream({ model, messages: [{ role: 'user', content: CHAT }] });
      return (await runner.finalChatCompletion()).choices[0].message.content;
    },
    tools: async () => {
      const messages = [{ role: 'user', content: TOOL_PROMPT }];
      const first = await client.chat.completions.parse({ model, messages, tools: [getWeather] });
      const message = first.choices[0].message;
      if (!message.tool_calls?.length) throw new Error('no tool call');
      messages.push(message);
      for (const call of message.tool_calls) {
        messages.push({ role: 'tool', tool_call_id: call.id, content: weather(call.function.parsed_arguments.city) });
      }
      return (await client.chat.completions.parse({ model, messages, tools: [getWeather] })).choices[0].message.content;
    },
    structured: async () =>
      (
        await client.chat.completions.parse({
          model,
          messages: [{ role: 'user', content: PERSON }],
          response_format: zodResponseFormat(Person, 'person'),
        })
      ).choices[0].message.parsed,
  });
}

const results = {
  '@langchain/openai': await langchain(),
  // supportsStructuredOutputs: without it generateObject sends json_object and not the schema.
  '@ai-sdk/openai-compatible': await aiSdk(
    createOpenAICompatible({ name: 'gateway', baseURL, apiKey, supportsStructuredOutputs: true }).chatModel(model),
  ),
  '@ai-sdk/openai .chat()': await aiSdk(createOpenAI({ baseURL, apiKey }).chat(model)),
  'openai (zod helpers)': await openaiNode(),
};
console.log(JSON.stringify(results));
